// The open-loop load generator of bulwark-drill (one thread, libuv + llhttp). Request i is
// due at its scheduled time whatever the responses do; a 1 ms timer (and every loop turn
// after I/O) starts every request whose time has come on an idle keep-alive connection, or on
// a new one while fewer than `connections` are open — otherwise it is not sent and counts
// as `overflow`. Latency is measured from the scheduled time (corrected for coordinated
// omission), so a target that slows down shows as latency, never as a lower offered rate.
// A request without its response `timeout` after its scheduled time is ended as `timeout`
// and its connection reset.
#pragma once

#include <llhttp.h>
#include <netinet/in.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "drill/model.h"

namespace bulwark::drill {

struct Record {
  std::uint64_t sched_ns = 0;       // from the start of the schedule
  std::uint32_t latency_us = 0;     // scheduled time -> response complete (or the error)
  std::uint16_t status = 0;         // 0 when no response
  std::uint8_t reason = 0;          // index into LoadGenerator::reasons(); 0 = none
  std::uint8_t priority = 0;        // index into the scenario's mix (0 without a mix)
  std::uint8_t path = 0;            // index into the request texts
  Outcome outcome = Outcome::ok;
  std::uint8_t state = 0;           // pending, active, done
};

// Classifies a response: the x-bulwark-reason of a local reply first, then the status.
Outcome classify(int status, const std::string& reason);

class LoadGenerator {
 public:
  struct Options {
    sockaddr_storage address{};
    double timeout_s = 5;
    std::size_t max_connections = 1000;
  };
  // `texts[path * priorities + priority]` is the request head up to (not including) the
  // final CRLF; `key_header` (when not empty) gets "key-N" for request i, N = i % keys + 1.
  LoadGenerator(uv_loop_t* loop, Options options, std::vector<Record>& records,
                std::vector<std::string> texts, std::size_t priorities, std::string key_header,
                std::uint64_t keys);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Starts the schedule at uv_hrtime() = `start_ns`; `done` runs once every request has
  // ended (after the last scheduled one), with the loop still running.
  void start(std::uint64_t start_ns, std::function<void()> done);
  // Stops scheduling (SIGINT): requests not started end as overflow; in-flight ones finish.
  void stop_scheduling();
  // Closes the timers and every connection; run the loop afterwards so their close callbacks
  // run before the generator is destroyed.
  void shutdown();

  const std::vector<std::string>& reasons() const { return reasons_; }
  std::int64_t max_start_lag_us() const { return max_lag_ns_ / 1000; }
  std::size_t open_connections() const { return open_; }
  // One past the last request that will start (the whole schedule unless stopped).
  std::uint64_t schedule_end() const { return end_; }

 private:
  struct Conn;
  static void on_tick(uv_timer_t* t);
  static void on_check(uv_check_t* c);
  static void on_connect(uv_connect_t* req, int status);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static int on_status(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* p);

  std::uint64_t now_ns() const { return uv_hrtime() - start_ns_; }
  void start_due();
  void expire();
  void send(Conn* c, std::uint64_t i);
  void open(std::uint64_t i);
  void finish(std::uint64_t i, int status, const std::string& reason, Outcome client_outcome);
  void close(Conn* c, Outcome outcome, bool reset);
  void idle_push(Conn* c);
  void idle_remove(Conn* c);
  std::uint8_t reason_id(const std::string& reason);
  void maybe_done();

  uv_loop_t* loop_;
  Options options_;
  std::vector<Record>& records_;
  std::vector<std::string> texts_;
  std::size_t priorities_;
  std::string key_header_;
  std::uint64_t keys_;
  std::string request_;  // the request being written (key header appended)
  uv_timer_t tick_{};
  uv_check_t check_{};
  std::uint64_t start_ns_ = 0, timeout_ns_ = 0;
  std::uint64_t next_ = 0, end_ = 0;  // next request to start; one past the last to start
  std::uint64_t active_ = 0;
  std::int64_t max_lag_ns_ = 0;
  std::size_t open_ = 0;
  std::vector<Conn*> idle_;
  std::vector<Conn*> carriers_;         // request -> the connection carrying it
  std::deque<std::uint64_t> inflight_;  // started requests in start order (= deadline order)
  std::vector<std::string> reasons_{""};
  std::unordered_map<std::string, std::uint8_t> reason_ids_{{"", 0}};
  llhttp_settings_t settings_{};
  std::function<void()> done_;
  bool running_ = false, finished_ = false;
};

}  // namespace bulwark::drill
