// One HTTP/1.1 connection to an upstream endpoint. It belongs to its ConnectionPool; while
// it carries a request it reports the response, piece by piece, to the UpstreamClient
// attached to it. Framing is strict: a response head above max_response_header_bytes, an
// invalid head, or a malformed chunked body fails the connection with UpstreamError::protocol
// and a detail, and such a connection is never reused. Memory is freed only in the libuv
// close callbacks.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/chunked.h"
#include "http/head_check.h"
#include "http/response_head.h"
#include "http/headers.h"
#include "net/turn_writes.h"
#include "net/write_queue.h"
#include "upstream/idle_list.h"
#include "upstream/stream.h"

namespace bulwark {

class ConnectionPool;
class TlsSession;

class UpstreamConnection final : public UpstreamStream, public TurnHolder {
 public:
  UpstreamConnection(ConnectionPool& pool, uv_loop_t* loop);
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  void connect(const sockaddr* address, std::uint64_t timeout_ms);
  // Starts a request: the response will be reported to `client`.
  void attach(UpstreamClient* client, bool head_request) override;
  // Writes what was added to out(). Returns false (and the connection fails) on error.
  // Small writes are held for the rest of the loop turn (net/turn_writes.h).
  bool flush() override;
  bool send_held() override;
  OutBatch& out() override { return out_; }
  std::size_t queued_bytes() const override;
  void pause_reading() override;
  void resume_reading() override;
  // Switch to raw byte mode (after 101).
  void start_tunnel() override;
  // The client is done with the connection: back to the pool if `reusable`, else closed.
  void release(bool reusable) override;
  // Closes at once; the client, if any, is not called back.
  void close() override;

  bool reused() const override { return reused_; }
  // Microseconds this request's response spent unread because the client could not take more
  // (reading paused by backpressure), including a pause still going on.
  std::uint64_t read_paused_us() const override;
  bool connected() const override { return connected_; }
  bool response_started() const { return response_started_; }
  bool keep_alive() const { return keep_alive_; }
  int status() const override { return plain_ ? plain_head_.status : parser_.status_code; }
  int minor_version() const { return plain_ ? plain_head_.minor_version : parser_.http_minor; }
  const HeaderBlock& headers() const override { return headers_; }
  const HeaderBlock& trailers() const override { return trailers_; }
  std::string_view status_text() const override { return status_text_; }
  bool body_chunked() const override {
    return plain_ ? plain_head_.chunked : (parser_.flags & F_CHUNKED) != 0;
  }
  bool has_content_length() const override {
    return plain_ ? plain_head_.has_content_length : (parser_.flags & F_CONTENT_LENGTH) != 0;
  }
  std::uint64_t content_length() const override { return content_length_; }

 private:
  friend class ConnectionPool;
  enum class State { connecting, active, idle, tunnel, closing };
  // Which part of the response the next bytes belong to: a body after a plain head is
  // counted here (length_body), after any other head read by llhttp (body).
  enum class Phase { head, chunked_body, body, length_body };

  static void on_connect(uv_connect_t* req, int status);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_close(uv_handle_t* handle);

  static int on_message_begin(llhttp_t* p);
  static int on_status(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t& settings();

  void handle_data(const char* data, std::size_t len);
  // The end of the upstream's bytes (or a read error): completes a close-delimited response,
  // else fails the request.
  void on_eof();
  // Connected (and the TLS handshake done): the client may write.
  void on_ready();
  // TLS: starts the handshake; ciphertext read; a handshake failure (logged, counted, and
  // reported to the client as `error`).
  void start_tls();
  void tls_input(const char* data, std::size_t len);
  void tls_failed(const std::string& reason,
                  UpstreamError error = UpstreamError::connect_failure);
  // Runs llhttp over `len` bytes of the read that ends at `read_end`, or over a copy of them
  // (then `copied_until` is where the copied bytes end in the read). False when the response
  // is complete or failed: the caller must stop.
  bool parse(const char* data, std::size_t len, const char* copied_until, const char* read_end);
  // Decodes chunked body bytes from `p` (advanced past them) to `end` and hands them to the
  // client. False when the response is complete or failed: the caller must stop.
  bool decode_chunked(const char*& p, const char* end);
  void start_chunked();
  // A plain head (http/response_head.h) was read: reports it and starts its body. False
  // when the response is complete or failed: the caller must stop.
  bool on_plain_head(bool at_end);
  // A response read without llhttp is complete; `at_end`: no bytes follow it in the read.
  void plain_complete(bool at_end);
  // Why the head just parsed is refused, or nullptr.
  const char* check_head() const;
  void protocol_error(std::string_view detail);
  void fail(UpstreamError error);

  ConnectionPool& pool_;
  IdleHook idle_hook_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_connect_t connect_req_;
  int open_handles_ = 0;
  int connect_error_ = 0;  // a synchronous uv_tcp_connect failure, reported from the timer
  State state_ = State::connecting;
  llhttp_t parser_;
  Phase phase_ = Phase::head;
  ResponseHeadScanner head_scan_;
  ChunkedDecoder chunked_;  // the body after a chunked head (llhttp reads only the head)
  bool plain_ = false;      // this response's head was a plain one, read without llhttp
  PlainResponseHead plain_head_;
  std::uint64_t body_left_ = 0;  // of a Content-Length body after a plain head
  HeaderBlock headers_;
  HeaderBlock trailers_;
  std::string status_text_;
  std::string head_copy_;     // a head with lone LFs, given to llhttp with CRLF
  std::string error_detail_;  // what was wrong with the response (protocol errors)
  OutBatch out_;
  std::unique_ptr<TlsSession> tls_;  // with a tls block: made when the TCP connect succeeds
  std::string tls_early_;            // written before the handshake was done (plaintext)
  bool tls_confirmed_ = false;       // the server accepted the handshake (see tls_input)
  UpstreamClient* client_ = nullptr;
  std::uint64_t content_length_ = 0;
  bool connected_ = false;
  bool reused_ = false;
  bool head_request_ = false;
  bool response_started_ = false;
  bool response_done_ = false;
  bool keep_alive_ = true;
  bool interim_ = false;
  bool reading_ = false;
  bool read_paused_ = false;
  std::uint64_t paused_since_us_ = 0;  // while read_paused_
  std::uint64_t paused_us_ = 0;        // earlier pauses of this request
};

}  // namespace bulwark

namespace bulwark {
// Upstream reads on this thread land in `buffer` (kReadBufferSize bytes, owned by the worker).
void set_upstream_read_buffer(char* buffer);
char* upstream_read_buffer();
}  // namespace bulwark
