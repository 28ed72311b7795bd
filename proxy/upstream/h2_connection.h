// HTTP/2 to an upstream (`protocol: h2`): one connection (h2c, or h2 by ALPN over TLS) that
// carries many requests, each an H2UpstreamStream. The connection belongs to its H2Pool; it
// runs an nghttp2 client session, opens streams up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS
// (nghttp2 queues the rest), keeps itself alive with PING while idle, and on GOAWAY finishes
// the streams the upstream accepted while those it did not process fail as `refused` (sent
// again elsewhere). Memory is freed only in the libuv close callbacks.
#pragma once

#include <llhttp.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "admin/stats.h"
#include "http/headers.h"
#include "net/write_queue.h"
#include "upstream/stream.h"

namespace bulwark {

class H2Pool;
class H2UpstreamConnection;
class TlsSession;

// One request on an HTTP/2 upstream connection. The exchange writes the request as HTTP/1.1
// bytes (see upstream/stream.h); flush() reads them back with llhttp (they are Bulwark's own
// serialization) into a HEADERS frame (Host as :authority, hop-by-hop fields dropped, `te:
// trailers` for gRPC) and DATA frames (a chunked body unchunked, its trailers as a trailing
// HEADERS frame). The response is reported with HTTP/1.1's vocabulary: a body without
// content-length as chunks (one per DATA frame), trailers as trailers.
class H2UpstreamStream final : public UpstreamStream {
 public:
  // A stream on `conn`: a recycled one (its buffers kept) or a new one.
  static H2UpstreamStream* make(H2UpstreamConnection& conn);
  // Done with: kept for make(), or freed.
  static void recycle(H2UpstreamStream* s);
  ~H2UpstreamStream() = default;
  H2UpstreamStream(const H2UpstreamStream&) = delete;
  H2UpstreamStream& operator=(const H2UpstreamStream&) = delete;

  void attach(UpstreamClient* client, bool head_request) override;
  OutBatch& out() override { return out_; }
  bool flush() override;
  std::size_t queued_bytes() const override;
  void pause_reading() override;
  void resume_reading() override;
  void start_tunnel() override {}  // an HTTP/2 response is never 101
  void release(bool reusable) override;
  void close() override { release(false); }
  bool reused() const override { return reused_; }
  std::uint64_t read_paused_us() const override;
  bool connected() const override;
  int status() const override { return status_; }
  const HeaderBlock& headers() const override { return headers_; }
  const HeaderBlock& trailers() const override { return trailers_; }
  std::string_view status_text() const override { return {}; }
  bool body_chunked() const override { return chunked_; }
  bool has_content_length() const override { return has_content_length_; }
  std::uint64_t content_length() const override { return content_length_; }

 private:
  friend class H2UpstreamConnection;
  H2UpstreamStream() = default;
  void reset(H2UpstreamConnection& conn);  // as new, on `conn`

  // The request, read back from out_.
  static const llhttp_settings_t& settings();
  static int on_url(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* p);
  static ssize_t read_body(nghttp2_session* session, std::int32_t stream_id,
                                 std::uint8_t* buf, std::size_t length, std::uint32_t* flags,
                                 nghttp2_data_source* source, void* user_data);
  // Runs what was added to out_ through the request reader; false: the request could not be
  // relayed (the stream failed).
  bool translate();
  // The request head is complete: the HEADERS frame (with a body to follow, or not).
  bool submit();

  // Events from the connection.
  void on_ready();  // the connection is up: the client may write
  void on_begin_headers();
  // A response header field (trailers after the final head); false: the stream failed.
  bool add_header(std::string_view name, std::string_view value);
  void on_headers_frame(bool end_stream);
  void on_data(const char* data, std::size_t len);
  void on_end_stream();
  // nghttp2 closed the stream (or never opened it: `opened` false) with `error_code`.
  void on_closed(std::uint32_t error_code);
  // The stream failed: its client (if `tell`) hears `error`; reset unless closed already.
  void fail(UpstreamError error, std::string_view detail = {}, bool tell = true);
  void touch();      // got events in this read: batch_end() follows
  void batch_end();  // after a read: the client flushes what the read gave it
  // The stream is done with on both sides: freed on the connection's next sweep.
  void maybe_retire();

  H2UpstreamConnection* conn_ = nullptr;
  UpstreamClient* client_ = nullptr;
  OutBatch out_;
  llhttp_t parser_;
  std::string url_;
  HeaderBlock request_headers_;
  HeaderBlock request_trailers_;
  std::string body_;             // request DATA not yet framed
  std::size_t body_offset_ = 0;  // framed up to here
  std::int32_t id_ = -1;         // -1: not submitted
  int status_ = 0;
  HeaderBlock headers_;
  HeaderBlock trailers_;
  std::uint64_t content_length_ = 0;
  std::uint64_t header_bytes_ = 0;  // of the response's header blocks, bounded
  std::uint64_t unconsumed_ = 0;    // DATA taken while paused: the window is opened on resume
  std::uint64_t paused_since_us_ = 0;
  std::uint64_t paused_us_ = 0;
  bool head_request_ = false;
  bool request_head_done_ = false;
  bool request_done_ = false;
  bool body_deferred_ = false;  // the data source waits for bytes
  bool body_high_ = false;      // queued request bytes went past the high-water mark
  bool has_content_length_ = false;
  bool chunked_ = false;
  bool final_head_ = false;  // the final response head arrived: what follows are trailers
  bool response_done_ = false;
  bool paused_ = false;
  bool reused_ = false;
  bool released_ = false;  // the client let go
  bool closed_ = false;    // nghttp2 is done with it (or never had it)
  bool retired_ = false;
  bool touched_ = false;  // got events in the current read
};

class H2UpstreamConnection {
 public:
  H2UpstreamConnection(H2Pool& pool, uv_loop_t* loop);
  H2UpstreamConnection(const H2UpstreamConnection&) = delete;
  H2UpstreamConnection& operator=(const H2UpstreamConnection&) = delete;

  void connect(const sockaddr* address, std::uint64_t timeout_ms);
  // A new stream for a request (the caller checked has_room()).
  H2UpstreamStream* open_stream();
  // New streams may go here: up, or connecting; not going away; below the stream limit.
  bool has_room() const;
  bool ready() const { return state_ == State::ready; }
  // The upstream's first SETTINGS arrived: its stream limit is known. Until then the
  // connection carries one stream (the pool waits rather than opening more connections).
  bool settled() const { return settled_; }
  bool closing() const { return state_ == State::closing; }
  std::size_t streams() const { return streams_.size(); }
  // Ends the connection: GOAWAY when up, and the streams still open fail (`reset`).
  void close();

 private:
  friend class H2UpstreamStream;
  enum class State { connecting, ready, closing };

  static void on_connect(uv_connect_t* req, int status);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_close(uv_handle_t* handle);

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t flags, void* user);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_data_chunk(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id,
                           const std::uint8_t* data, std::size_t len, void* user);
  static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code,
                             void* user);
  static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int error,
                               void* user);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user);

  bool make_session();
  void on_ready();
  void input(const char* data, std::size_t len);
  void tls_input(const char* data, std::size_t len);
  void start_tls();
  // Frames what nghttp2 has to send and writes it (not while nghttp2 is calling us: then
  // after). False: the connection failed.
  bool send();
  // send() once this loop turn's callbacks are done (an idle hook, run before the loop polls
  // again, whichever phase asked for it): the streams flushed in
  // one turn share a write.
  void request_send();
  static void on_send_hook(uv_idle_t* idle);
  // The connection is lost: every stream fails with `error` (protocol: `detail`), counted as
  // `h2_error` when it is an HTTP/2 error.
  // `tell`: the streams' clients hear of it (not when Bulwark closes the connection itself).
  void fail(UpstreamError error, std::string_view detail = {}, int h2_error = -1,
            bool tell = true);
  H2UpstreamStream* stream(std::int32_t id) const;
  void stream_done(H2UpstreamStream* s);  // retired: freed by sweep()
  void sweep();
  void arm_timer();
  void update_idle();  // the pool's active/idle gauges follow whether streams are open

  H2Pool& pool_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_idle_t send_hook_;  // an idle handle: started, the loop does not block before it runs
  uv_connect_t connect_req_;
  int open_handles_ = 0;
  int connect_error_ = 0;
  State state_ = State::connecting;
  nghttp2_session* session_ = nullptr;
  std::unique_ptr<TlsSession> tls_;
  OutBatch out_;
  std::vector<H2UpstreamStream*> streams_;  // open, or waiting for the connection
  std::vector<H2UpstreamStream*> retired_;
  // Streams that got events in the current read, and a copy to walk (streams may end, and
  // others begin, while their clients are called).
  std::vector<H2UpstreamStream*> touched_streams_, walk_;
  std::uint64_t started_ = 0;         // streams opened so far
  std::uint64_t last_read_ms_ = 0;    // loop time of the last bytes from the upstream
  std::uint64_t idle_since_ms_ = 0;   // loop time the last stream ended
  std::uint64_t ping_sent_ms_ = 0;    // 0: no PING awaiting its ACK
  bool in_callbacks_ = false;         // inside nghttp2 (mem_recv / mem_send)
  bool send_wanted_ = false;          // send() was asked for while in_callbacks_
  bool send_scheduled_ = false;       // the prepare hook will send
  bool going_away_ = false;           // GOAWAY received, or closing when idle
  std::string peer_error_;  // why nghttp2 ended the session for the upstream's error
  bool settled_ = false;
  std::uint64_t settle_by_ms_ = 0;  // connect_timeout also bounds the wait for SETTINGS
  bool close_wanted_ = false;         // close() was asked for while in_callbacks_
  bool stats_idle_ = false;           // counted in the pool's idle gauge (else active)
};

}  // namespace bulwark
