// What a request's attempt holds of an upstream: one stream that carries its request up and
// its response down. An HTTP/1.1 connection is one stream at a time (UpstreamConnection); an
// HTTP/2 connection carries many (H2UpstreamStream), each reported the same way, so the
// request path does not know which protocol the upstream speaks.
//
// The request goes in as HTTP/1.1 bytes (out()): the head Bulwark serialized, then the body,
// chunked when its length is not known, with its trailer section. An HTTP/1.1 connection
// writes them as they are; an HTTP/2 stream reads them back into HEADERS and DATA frames.
// The response comes back through UpstreamClient, with HTTP/1.1's vocabulary (a status, a
// header block, a body that may be chunked, trailers).
#pragma once

#include <cstdint>
#include <string_view>

#include "http/headers.h"
#include "net/write_queue.h"

namespace bulwark {

class UpstreamStream;

// local_resources: Bulwark could not open a socket (out of descriptors): not the endpoint's
// doing. refused: an HTTP/2 upstream refused the stream before processing it (REFUSED_STREAM,
// or a GOAWAY below its id): always safe to send again.
enum class UpstreamError { connect_failure, connect_timeout, reset, protocol, local_resources, refused };

// Implemented by whoever sends a request on the stream (the request's Attempt).
class UpstreamClient {
 public:
  virtual void on_upstream_connected() = 0;
  // An interim 1xx response other than 101 (headers(), status(), status_text() describe it).
  virtual void on_upstream_interim(UpstreamStream& stream) = 0;
  // The final response head. Whether a body follows is decided by the stream (RFC 9112
  // 6.3: none for HEAD, 1xx, 204 and 304).
  virtual void on_upstream_headers(UpstreamStream& stream) = 0;
  virtual void on_upstream_chunk_header(std::uint64_t size) = 0;
  virtual void on_upstream_body(const char* data, std::size_t len) = 0;
  virtual void on_upstream_chunk_complete() = 0;
  // The response is complete (trailers() holds its trailer fields, if any).
  virtual void on_upstream_complete() = 0;
  // After a 101: raw bytes from the upstream.
  virtual void on_upstream_tunnel_data(const char* data, std::size_t len) = 0;
  // The stream failed (it is already detached and closing). `detail` says what was wrong
  // with the response for UpstreamError::protocol (valid during the call), else it is empty.
  virtual void on_upstream_error(UpstreamError error, std::string_view detail) = 0;
  // Called once at the end of each batch of callbacks from one read: flush here.
  virtual void on_upstream_batch_end() = 0;
  // The bytes queued towards the upstream dropped below the low-water mark.
  virtual void on_upstream_drained() = 0;

 protected:
  ~UpstreamClient() = default;
};

class UpstreamStream {
 public:
  // Starts a request: the response will be reported to `client`.
  virtual void attach(UpstreamClient* client, bool head_request) = 0;
  // The request bytes (HTTP/1.1 framing, see above); flush() sends what was added. Returns
  // false (and the stream fails) on error.
  virtual OutBatch& out() = 0;
  virtual bool flush() = 0;
  // Request bytes not yet taken by the upstream (for backpressure on the client).
  virtual std::size_t queued_bytes() const = 0;
  // Backpressure on the response: stop (and resume) taking its bytes.
  virtual void pause_reading() = 0;
  virtual void resume_reading() = 0;
  // Switch to raw byte mode (after 101).
  virtual void start_tunnel() = 0;
  // The client is done with the stream: reusable or not (then it is reset or closed).
  virtual void release(bool reusable) = 0;
  // Ends at once; the client, if any, is not called back.
  virtual void close() = 0;

  // Whether the connection carried a request before this one.
  virtual bool reused() const = 0;
  // Microseconds this request's response spent unread because the client could not take
  // more (reading paused by backpressure), including a pause still going on.
  virtual std::uint64_t read_paused_us() const = 0;
  virtual bool connected() const = 0;
  virtual int status() const = 0;
  virtual const HeaderBlock& headers() const = 0;
  virtual const HeaderBlock& trailers() const = 0;
  virtual std::string_view status_text() const = 0;
  // The body comes in chunks (on_upstream_chunk_header .. complete around its pieces).
  virtual bool body_chunked() const = 0;
  virtual bool has_content_length() const = 0;
  virtual std::uint64_t content_length() const = 0;

 protected:
  ~UpstreamStream() = default;
};

}  // namespace bulwark
