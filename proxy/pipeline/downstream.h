// The client side of a request: what an Exchange reads of the request and how it answers. One
// HTTP/1 connection is a Downstream serving its requests one at a time (ClientConnection); on
// an HTTP/2 connection each stream is one (H2Stream), so the request path (admission stages,
// attempts, retries, replies) is the same for both. The base keeps what every kind shares: the
// request's buffers and exchange, its phase, and the log line; the transport and the framing
// of the response are the subclass's.
#pragma once

#include <llhttp.h>

#include <cstdint>
#include <string_view>

#include "http/local_reply.h"
#include "pipeline/exchange.h"
#include "pipeline/request_buffers.h"

namespace bulwark {

class Worker;
struct ListenerRuntime;
struct ListenerView;
class UpstreamStream;

class Downstream {
 public:
  Downstream(ListenerRuntime& listener, Worker& worker) : listener_(listener), worker_(worker) {}
  Downstream(const Downstream&) = delete;
  Downstream& operator=(const Downstream&) = delete;
  virtual ~Downstream() = default;

  enum class Phase {
    idle,      // between requests (keep-alive)
    head,      // reading a request head
    request,   // head parsed: body and/or response under way
    tunnel,    // after 101: bytes both ways
    lingering  // response sent, closing: draining what the client still sends
  };

  Worker& worker() { return worker_; }
  ListenerRuntime& listener() { return listener_; }
  // The listener's config and counters for the request in progress: as when it began (a
  // reload does not change a request under way), or between requests the current ones.
  const ListenerView& view() const;
  Phase phase() const { return phase_; }
  void set_phase(Phase p) { phase_ = p; }
  // The request that begins: its method and the HTTP/1.x minor version it is served as (an
  // HTTP/2 stream is served with HTTP/1.1's semantics).
  void begin_request(std::uint8_t method, int minor_version) {
    method_ = method;
    minor_version_ = minor_version;
  }
  std::uint8_t method() const { return method_; }
  int minor_version() const { return minor_version_; }
  void close_after_response() { close_after_response_ = true; }
  bool closes_after_response() const { return close_after_response_; }
  bool draining() const { return draining_; }
  // Buffers of the request in progress, from the worker's free list: a connection between
  // requests holds none, which keeps idle keep-alive connections small.
  RequestBuffers& b() {
    if (!buffers_) acquire_buffers();
    return *buffers_;
  }
  bool has_buffers() const { return buffers_ != nullptr; }
  const HeaderBlock& request_headers() { return b().headers; }

  // The transport.
  virtual std::string_view client_ip() const = 0;
  virtual bool tls() const = 0;
  virtual bool closing() const = 0;
  // The request can no longer be answered (closing, or the response is sent and the
  // connection lingers).
  virtual bool done() const = 0;
  virtual bool in_execute() const = 0;
  virtual bool client_eof() const = 0;
  virtual bool read_paused() const = 0;
  virtual std::size_t pending_input_size() const = 0;
  virtual void arm_timer(std::uint64_t ms) = 0;
  virtual void pause_reading() = 0;
  virtual void resume_reading() = 0;
  // Hands what is queued to the sockets (the upstream's too). False: the connection closed.
  virtual bool flush() = 0;
  // Sends a local reply. Closes the connection (a stream: ends it) afterwards when `close`
  // is set or the request body has not been read completely.
  virtual void local_reply(Reason reason, std::string_view detail, bool close = false,
                           int status = 0) = 0;
  // Ends after what is queued (HTTP/1: FIN and lingering close).
  virtual void close_gracefully() = 0;
  // Ends at once (the upstream connection included): the client sees the response break.
  virtual void close() = 0;
  // The upstream switched protocols (101): what the client sent after its upgrade request,
  // held until now, goes to the upstream.
  virtual void forward_held_input() = 0;
  // The response is complete: logs the request, ends its exchange, serves what comes next.
  virtual void finish_request() = 0;

  // The response as the exchange relays it, framed for this client.
  // Whether the client can be told to go on with its body (HTTP/1.1's 100 Continue).
  virtual void send_continue() = 0;
  virtual void send_interim(const UpstreamStream& conn) = 0;
  // The final response head. `extra`: header lines ("name: value\r\n") Bulwark adds. Decides
  // x().response_framing.
  virtual void send_response_head(const UpstreamStream& conn, std::string_view extra,
                                  std::string_view upgrade_token) = 0;
  // The upstream's chunk framing, for a downstream that relays it as it is (HTTP/1.1).
  virtual void send_response_chunk_header(std::uint64_t size) = 0;
  virtual void send_response_body(const char* data, std::size_t len) = 0;
  virtual void send_response_chunk_end() = 0;
  // The response body ended; `trailers`: the upstream's trailer fields, or none.
  virtual void end_response(const HeaderBlock* trailers) = 0;
  virtual void send_tunnel_data(const char* data, std::size_t len) = 0;
  // Drops a response head (and body pieces) not yet handed to the socket; false when some of
  // it went out already.
  virtual bool drop_unsent_response() = 0;

  // Logs the request and counts it (once).
  void account_request();

 protected:
  void acquire_buffers();  // from the worker's free list
  // The request in progress; made when a request begins (or first needed) and destroyed when
  // it ends (end_exchange), so each request starts from a fresh one.
  Exchange& x() {
    if (!ex_) make_exchange();
    return *ex_;
  }
  const Exchange& x() const { return *ex_; }
  void make_exchange();
  void end_exchange();

  ListenerRuntime& listener_;
  Worker& worker_;
  RequestBuffers* buffers_ = nullptr;
  Exchange* ex_ = nullptr;
  Phase phase_ = Phase::idle;
  std::uint8_t method_ = HTTP_GET;  // of the current request
  int minor_version_ = 1;
  bool close_after_response_ = false;
  bool draining_ = false;
};

}  // namespace bulwark
