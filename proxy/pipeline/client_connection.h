// The server side of one HTTP/1 client connection: reading (into the worker's shared read
// buffer), parsing, writing, keep-alive, pipelining and lingering close. Requests on a
// connection are served one at a time, in order (pipelined requests wait, parsed, in a small
// buffer); each is an Exchange (exchange.h), made when the request begins and retired when it
// ends, so a connection between requests holds no request. client_connection.cc holds the
// connection side (reading, timers, local replies, the log line, close); request_parse.cc the
// parsing (llhttp callbacks, head checks, chunked bodies, limits).
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/intrusive_list.h"
#include "http/headers.h"
#include "http/local_reply.h"
#include "net/tls.h"
#include "net/turn_writes.h"
#include "net/write_queue.h"
#include "pipeline/admission.h"
#include "pipeline/downstream.h"
#include "pipeline/h2_session.h"
#include "pipeline/exchange.h"
#include "pipeline/request_buffers.h"
#include "pipeline/route_state.h"
#include "resilience/redis_limiter.h"
#include "upstream/connection.h"
#include "upstream/upstream.h"

namespace bulwark {

class Worker;
struct ListenerRuntime;
struct ListenerView;

struct RouteStats;

class ClientConnection final : public Downstream, public TurnHolder {
 public:
  explicit ClientConnection(ListenerRuntime& listener);

  // Takes the accepted socket `fd` and starts reading. False: closed already (fd too).
  bool open(int fd);
  // Worker draining: closes now if between requests, else after the current response.
  void drain();

  ListHook<ClientConnection> list_hook;  // the worker's list of its connections

  const llhttp_t& parser() const { return parser_; }

  // HTTP/2 (h2_session.h): the session frames through these.
  bool http2() const { return h2_ != nullptr; }
  // Writes (or queues) `out` on the socket, through TLS if any. False: the connection closed.
  bool write_batch(OutBatch& out);
  // Moves the connection's deadline earlier (never later): the HTTP/2 session's streams.
  void arm_timer_within(std::uint64_t ms);
  std::size_t write_queue_size() const {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
  }

  // Downstream
  std::string_view client_ip() const override { return client_ip_; }
  bool tls() const override { return tls_ != nullptr; }
  bool closing() const override { return closing_; }
  bool done() const override { return closing_ || phase_ == Phase::lingering; }
  bool in_execute() const override { return in_execute_; }
  bool client_eof() const override { return client_eof_; }
  bool read_paused() const override { return read_paused_; }
  std::size_t pending_input_size() const override { return pending_input_.size(); }
  void arm_timer(std::uint64_t ms) override;
  void pause_reading() override;
  void resume_reading() override;
  // Small writes are held for the rest of the loop turn (net/turn_writes.h).
  bool flush() override;
  bool send_held() override;
  void local_reply(Reason reason, std::string_view detail, bool close = false,
                   int status = 0) override;
  void close_gracefully() override;
  void close() override;
  void forward_held_input() override;
  void finish_request() override;
  void send_continue() override;
  void send_interim(const UpstreamStream& conn) override;
  void send_response_head(const UpstreamStream& conn, std::string_view extra,
                          std::string_view upgrade_token) override;
  void send_response_chunk_header(std::uint64_t size) override;
  void send_response_body(const char* data, std::size_t len) override;
  void send_response_chunk_end() override;
  void end_response(const HeaderBlock* trailers) override;
  void send_tunnel_data(const char* data, std::size_t len) override;
  bool drop_unsent_response() override;

 private:

  // client_connection.cc (connection) and request_parse.cc (parsing)
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  // Bytes read from the socket (or, with TLS, its ciphertext).
  void on_bytes(const char* data, std::size_t len);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_close(uv_handle_t* handle);
  static const llhttp_settings_t& settings();
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, std::size_t len);
  static int cb_url_complete(llhttp_t* p);
  static int cb_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int cb_header_field_complete(llhttp_t* p);
  static int cb_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int cb_header_value_complete(llhttp_t* p);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, std::size_t len);
  static int cb_message_complete(llhttp_t* p);

  void handle_input(const char* data, std::size_t len);
  // Ciphertext read on a TLS listener: the handshake, then each batch of plaintext to
  // handle_input (and flushed) before the plaintext buffer is used again.
  void tls_input(const char* data, std::size_t len);
  // The client's end of input (EOF, or its TLS close_notify).
  void on_eof();
  void execute(const char* data, std::size_t len);
  // The head is parsed (llhttp paused just after it, at `body`): checks how it ended, then
  // validates and routes the request. False when the request was answered and parsing stops.
  bool on_head_parsed(const char* data, const char* body);
  // Feeds chunked request body bytes to the decoder, advancing `data`. True when the body is
  // complete; false when more input is needed or the request was refused.
  bool decode_chunked(const char*& data, const char* end);
  // The request message is complete: HPE_PAUSED, or 0 after an upgrade request.
  int message_complete();
  // Counts and forwards body bytes; false (and the request refused) above max_body_bytes.
  bool take_body(const char* data, std::size_t len);
  void add_trailer(std::string_view name, std::string_view value);
  // A parse error: the reply execute() sends once llhttp has stopped.
  int parse_error(Reason reason, const char* detail, int status = 0);
  void serve_pending_input();
  // The bytes after an upgrade request (see request_parse.cc).
  void after_upgrade_request(const char* data, std::size_t len);
  bool count_head_bytes(std::size_t len);
  void reset_request();

  void release_buffers();
  // Serves the connection as HTTP/2 from here on. False: closed.
  bool start_http2();
  // A plain listener with h2c: the first bytes decide between HTTP/1 and HTTP/2's preface.
  // True when they were taken (HTTP/2 started, or more bytes are needed to decide).
  bool sniff_preface(const char* data, std::size_t len);

  std::unique_ptr<H2Session> h2_;
  bool first_input_ = true;  // nothing read yet (for the h2c preface)
  uv_tcp_t tcp_{};
  std::unique_ptr<TlsSession> tls_;  // a TLS listener's connection
  std::uint64_t tls_bytes_in_ = 0;   // ciphertext received before the handshake was done
  uv_timer_t timer_{};
  uv_shutdown_t shutdown_req_{};
  int open_handles_ = 0;
  std::uint64_t deadline_ms_ = 0;   // when the current phase times out (loop time), 0: never
  std::uint64_t timer_due_ms_ = 0;  // when the timer is set to fire, 0: not set
  bool head_timer_armed_ = false;
  bool closing_ = false;
  bool reading_ = false;
  bool read_paused_ = false;  // by backpressure or pipelining, not by closing
  bool client_eof_ = false;

  llhttp_t parser_{};
  std::string client_ip_;
  std::string pending_input_;  // bytes after a complete request, waiting their turn
  std::uint64_t head_bytes_ = 0;
  // Obsolete line folding detection (see cb_header_value).
  const char* exec_end_ = nullptr;
  const char* value_piece_end_ = nullptr;
  bool value_open_ = false;
  std::uint64_t header_count_ = 0;
  bool head_paused_ = false;   // llhttp stopped at the end of a head (cb_headers_complete)
  char input_tail_ = '\n';     // the last byte llhttp consumed from the previous input
  bool chunked_body_ = false;  // the chunked decoder reads the request body, not llhttp

  bool in_execute_ = false;
  Reason error_reason_ = Reason::bad_request;
  bool error_reason_set_ = false;
  int error_status_ = 0;  // 0: the reason's status
  const char* error_detail_ = "";
};

}  // namespace bulwark
