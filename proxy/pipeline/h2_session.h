// HTTP/2 on a client connection (nghttp2's server session): h2c with prior knowledge or h2
// chosen by ALPN. The connection's socket, TLS and timer stay ClientConnection's; the session
// turns its bytes into streams, and each stream is a Downstream (H2Stream) carrying one
// Exchange through the same request path as an HTTP/1 request. Flow control gives
// backpressure both ways: request DATA is acknowledged (WINDOW_UPDATE) only once the upstream
// connection has taken it, and an upstream is read no faster than the client's window lets
// its response out. The known HTTP/2 attacks close the connection with GOAWAY and are counted
// (H2Error).
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "admin/stats.h"
#include "net/write_queue.h"
#include "pipeline/downstream.h"

namespace bulwark {

class ClientConnection;
class H2Session;


// One request stream.
class H2Stream final : public Downstream {
 public:
  H2Stream(H2Session& session, std::int32_t id);
  ~H2Stream() override;

  std::int32_t id() const { return id_; }

  // Downstream
  std::string_view client_ip() const override;
  bool tls() const override;
  bool closing() const override;
  bool done() const override { return closed_ || finished_ || closing(); }
  bool in_execute() const override;
  bool client_eof() const override { return false; }
  bool read_paused() const override { return paused_; }
  std::size_t pending_input_size() const override { return 0; }
  void arm_timer(std::uint64_t ms) override;
  void pause_reading() override { paused_ = true; }
  void resume_reading() override;
  bool flush() override;
  void local_reply(Reason reason, std::string_view detail, bool close = false,
                   int status = 0) override;
  void close_gracefully() override { close(); }
  void close() override;
  void forward_held_input() override {}
  void finish_request() override;
  void send_continue() override;
  void send_interim(const UpstreamStream& conn) override;
  void send_response_head(const UpstreamStream& conn, std::string_view extra,
                          std::string_view upgrade_token) override;
  void send_response_chunk_header(std::uint64_t) override {}
  void send_response_body(const char* data, std::size_t len) override;
  void send_response_chunk_end() override {}
  void end_response(const HeaderBlock* trailers) override;
  void send_tunnel_data(const char*, std::size_t) override {}
  bool drop_unsent_response() override;

 private:
  friend class H2Session;
  // What the stream holds of its request (its exchange, the worker's buffers) given back.
  void release_request();
  // Ready for a new stream `id` on the same session, as if just made (its buffers' capacity
  // kept): after release_request().
  void reuse(std::int32_t id);
  // nghttp2's events for this stream (h2_session.cc).
  int on_header(std::string_view name, std::string_view value);
  void on_headers_end(bool end_stream);
  void on_data(const char* data, std::size_t len);
  void on_end_stream();
  // The stream is gone (reset by either side, or both ends closed).
  void on_closed();
  void on_timeout();
  // Gives back what the client sent (WINDOW_UPDATE) once it was handed on.
  void consume();
  ssize_t read_data(std::uint8_t* buf, std::size_t length, std::uint32_t* flags);
  // Submits a head made by send_response_head or a local reply.
  void submit_head();
  void submit_trailers();
  void clear_nv();
  void add_nv(std::string_view name, std::string_view value);
  // The same with the name lower-cased on the way in (HTTP/2 field names are lower case).
  void add_nv_lower(std::string_view name, std::string_view value);
  void add_extra_lines(std::string_view extra);
  void reset(std::uint32_t error_code);
  void end_request_use();

  H2Session& session_;
  std::int32_t id_;
  std::string path_, authority_, scheme_, method_name_, cookie_;
  std::size_t header_bytes_ = 0;
  std::size_t header_count_ = 0;
  bool headers_done_ = false;
  bool grpc_ = false;             // content-type application/grpc: local replies are gRPC errors
  bool closed_ = false;           // nghttp2 closed the stream
  bool finished_ = false;         // the exchange ended; the response may still be going out
  bool paused_ = false;           // request DATA is not acknowledged
  std::size_t unconsumed_ = 0;    // request bytes received and not acknowledged yet
  // The response: a head waiting to be submitted, then the body as it comes from the upstream.
  bool head_pending_ = false;
  bool head_submitted_ = false;
  bool has_body_ = true;
  bool body_end_ = false;
  bool deferred_ = false;         // nghttp2 waits for body bytes (NGHTTP2_ERR_DEFERRED)
  bool upstream_paused_ = false;  // the upstream is not read while the body waits here
  std::string body_;              // response bytes not yet framed
  std::size_t body_sent_ = 0;     // of body_
  struct NvField {
    std::uint32_t name_offset, name_length, value_offset, value_length;
  };
  std::string nv_storage_;        // names and values the nv arrays point into
  std::size_t nv_used_ = 0;       // of nv_storage_ (kept at its largest size)
  std::vector<NvField> nv_fields_;
  std::string trailer_storage_;
  std::vector<std::uint32_t> trailer_lengths_;
  std::uint64_t deadline_ms_ = 0;
  std::uint64_t begun_ms_ = 0;  // when its HEADERS began (timeouts.header)
};

class H2Session {
 public:
  explicit H2Session(ClientConnection& conn);
  ~H2Session();
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;

  // Sends Bulwark's SETTINGS. False: the session could not be made.
  bool start();
  // Bytes from the client (plaintext). False: the connection is to close.
  bool input(const char* data, std::size_t len);
  // Frames what nghttp2 has to send into the connection's socket. False: the connection closed.
  bool flush();
  // Frames what is due once the loop turn's callbacks are done (Worker::between_turns).
  void request_flush();
  void deferred_flush();
  // The socket's queue went below the low mark: more can be framed.
  void on_socket_drained();
  // GOAWAY: no new streams; the connection closes once the open ones are done.
  void drain();
  // The connection closes: every stream's exchange ends.
  void abort_streams();
  // The connection's timer: stream deadlines and stalled windows.
  void on_timer();
  bool wants_close() const { return want_close_; }
  std::size_t open_streams() const { return streams_.size(); }

  ClientConnection& connection() { return conn_; }
  nghttp2_session* session() { return session_; }
  bool in_recv() const { return in_recv_; }
  void stream_deadline_changed(std::uint64_t due_ms);
  // A stream ended; destroyed by sweep(), which the connection calls when a libuv callback
  // begins (never from inside the stream's own calls).
  void retire(H2Stream* s);
  void sweep();
  // Ends the connection for `why`: GOAWAY with `code`, counted.
  void fail(H2Error why, std::uint32_t code);

 private:
  static ssize_t on_send(nghttp2_session*, const std::uint8_t*, std::size_t, int, void*);
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame*, void*);
  static int on_header(nghttp2_session*, const nghttp2_frame*, const std::uint8_t*, std::size_t,
                       const std::uint8_t*, std::size_t, std::uint8_t, void*);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame*, void*);
  static int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t, const std::uint8_t*,
                           std::size_t, void*);
  static int on_stream_close(nghttp2_session*, std::int32_t, std::uint32_t, void*);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame*, void*);
  static int on_invalid_frame(nghttp2_session*, const nghttp2_frame*, int, void*);
  H2Stream* find(std::int32_t id);
  void count(H2Error why);
  void update_streams_gauge(long delta);

  ClientConnection& conn_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<std::int32_t, std::unique_ptr<H2Stream>> streams_;
  H2Stream* last_begun_ = nullptr;  // the stream whose HEADERS began last (find()'s shortcut)
  std::vector<std::unique_ptr<H2Stream>> retired_;
  std::vector<std::unique_ptr<H2Stream>> spare_;  // retired streams kept for new ones
  // Map nodes of retired streams, reused for new ones: a stream costs the map no allocation.
  std::vector<decltype(streams_)::node_type> spare_nodes_;
  OutBatch out_;
  bool in_recv_ = false;
  bool want_close_ = false;
  bool draining_ = false;
  bool failed_ = false;         // Bulwark sent its own GOAWAY for an attack
  bool idle_armed_ = false;
  bool close_requested_ = false;
  bool flush_queued_ = false;   // in the worker's list of sessions to flush  // the connection was told to close after what is queued     // the timer runs for the idle timeout (no stream open)
  std::uint64_t refused_streams_ = 0;
  std::uint64_t pings_ = 0, settings_ = 0, resets_ = 0;
  double reset_tokens_ = 200;  // the rapid-reset bucket (see on_frame_recv)
  std::uint64_t reset_at_ms_ = 0;
  std::uint64_t stall_since_ms_ = 0;  // a stream has body bytes and no window since then
};

}  // namespace bulwark
