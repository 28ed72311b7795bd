// bulwark-testd's connection and its shared state (see testd.cc for what the server does).
// testd.cc holds the socket side (accepting, reading, parsing, websocket), respond.cc the
// answer to one request (status, body, generated bodies, faults).
#pragma once

#include <llhttp.h>
#include <strings.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "capacity.h"

namespace testd {

extern uv_loop_t* g_loop;
extern std::uint64_t g_connections_total, g_connections_open, g_requests;
extern int g_health_status;
extern std::uint64_t g_health_delay_ms;
extern std::uint64_t g_idle_close_ms;
extern std::uint64_t g_default_delay_ms;
// Failure mode for every request that does not ask otherwise, set by GET /__mode?...
extern int g_mode_status;
extern std::string g_mode_reset;
extern std::string g_name;

extern char pattern_block[251 * 128];  // room for a 16 KiB slice at any phase

struct Conn;

struct WriteReq {
  uv_write_t req;
  Conn* conn;
  std::string data;
};

struct Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  llhttp_t parser;
  llhttp_settings_t settings;
  std::string url, field, value;
  std::vector<std::pair<std::string, std::string>> headers;
  bool in_value = false;
  int open_handles = 2;
  bool closing = false;
  // current request
  std::uint32_t body_crc = 0;
  std::uint64_t body_bytes = 0;
  bool echo = false, echo_chunked = false;
  bool busy = false;    // a response is being generated
  std::string pending;  // bytes of pipelined requests received while busy
  // response generation
  std::uint64_t remaining = 0, offset = 0;
  bool gen_chunked = false, close_after = false, reset_half = false;
  bool websocket = false;
  std::string ws_buf;
  std::size_t queued = 0;
  bool paused = false;
  bool in_execute = false;
  std::uint64_t served = 0;               // requests answered on this connection
  testd::CapacityJob* cap_job = nullptr;  // waiting or in service in capacity mode

  std::string param(const char* name) const {
    std::string key = std::string(name) + "=";
    auto q = url.find('?');
    if (q != std::string::npos) {
      std::string query = url.substr(q + 1);
      std::size_t at = 0;
      while (at <= query.size()) {
        auto amp = query.find('&', at);
        std::string kv = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
        if (kv.rfind(key, 0) == 0) return kv.substr(key.size());
        if (amp == std::string::npos) break;
        at = amp + 1;
      }
    }
    std::string h = std::string("x-testd-") + name;
    for (auto& [n, v] : headers)
      if (strcasecmp(n.c_str(), h.c_str()) == 0) return v;
    return "";
  }
  std::string header(const char* name) const {
    for (auto& [n, v] : headers)
      if (strcasecmp(n.c_str(), name) == 0) return v;
    return "";
  }
  std::string path() const { return url.substr(0, url.find('?')); }
};

void conn_close(Conn* c);
void conn_reset(Conn* c);
// GET /__down?ms=N: 50 ms from now (time for the answer to leave), stop listening and reset
// every connection; listen again on the same address N ms later.
void go_down(std::uint64_t ms);
// Queues `data` on the connection (closes it when the write cannot start).
void send(Conn* c, std::string data);
// Parses request bytes (pipelined ones wait while a response is being made).
void process(Conn* c, const char* data, std::size_t len);
void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf);
void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

// respond.cc
// Answers the request just parsed, as its parameters (or the global mode) ask.
void respond(Conn* c);
// Writes more of a generated body while the connection's queue is short.
void continue_generate(Conn* c);
// The response is complete: close, or wait for the next request and serve pipelined bytes.
void finish_response(Conn* c);

}  // namespace testd
