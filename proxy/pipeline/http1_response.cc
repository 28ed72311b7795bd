// How a ClientConnection (HTTP/1) frames the response an Exchange relays: interim responses,
// the head (keep-alive, chunked or length-delimited, HTTP/1.0 close-delimited), the body with
// the upstream's chunking kept or added, trailers, and the bytes of a 101 tunnel.
#include <algorithm>

#include "pipeline/client_connection.h"
#include "worker.h"

namespace bulwark {

void ClientConnection::send_continue() { b().out.add_copy("HTTP/1.1 100 Continue\r\n\r\n"); }

void ClientConnection::send_interim(const UpstreamStream& conn) {
  // RFC 9110 15.2: never to an HTTP/1.0 client.
  if (minor_version_ == 0) return;
  std::string& head = b().scratch;
  write_interim_response_head(head, conn.headers(), conn.status(), conn.status_text());
  b().out.add_copy(head);
  x().bytes_out += head.size();
}

void ClientConnection::send_response_head(const UpstreamStream& conn, std::string_view extra,
                                          std::string_view upgrade_token) {
  Exchange& ex = x();
  int status = ex.status;
  bool no_body = ex.head_request || status == 204 || status == 304 || status == 101;
  if (status == 101) {
    ex.response_framing = BodyFraming::none;
  } else if (no_body) {
    ex.response_framing = conn.has_content_length() && status != 204 ? BodyFraming::content_length
                                                                     : BodyFraming::none;
  } else if (conn.has_content_length()) {
    ex.response_framing = BodyFraming::content_length;
  } else if (minor_version_ == 1) {
    ex.response_framing = BodyFraming::chunked;  // chunked or close-delimited upstream body
  } else {
    ex.response_framing = BodyFraming::none;  // HTTP/1.0 client: the close ends the body
    close_after_response_ = true;
  }
  if ((ex.upgrade && status != 101) || draining_) close_after_response_ = true;

  DownstreamResponseHead head;
  head.status = status;
  head.reason = conn.status_text();
  head.minor_version = minor_version_;
  head.framing = ex.response_framing;
  head.content_length = conn.content_length();
  head.close = close_after_response_;
  head.keep_alive_1_0 = minor_version_ == 0 && !close_after_response_;
  head.upgrade = upgrade_token;
  head.extra = extra;
  write_downstream_response_head(b().response_head, conn.headers(), head);
  b().out.add(b().response_head);
  ex.bytes_out += b().response_head.size();
}

void ClientConnection::send_response_chunk_header(std::uint64_t size) {
  if (x().response_framing == BodyFraming::chunked && x().upstream_chunked && size > 0)
    b().out.add_chunk_header(size);
}

void ClientConnection::send_response_body(const char* data, std::size_t len) {
  if (x().response_framing == BodyFraming::chunked && !x().upstream_chunked) {
    b().out.add_chunk_header(len);
    b().out.add(data, len);
    b().out.add_copy("\r\n");
    return;
  }
  b().out.add(data, len);
}

void ClientConnection::send_response_chunk_end() {
  if (x().response_framing == BodyFraming::chunked && x().upstream_chunked &&
      x().response_chunk_size > 0)
    b().out.add_copy("\r\n");
}

void ClientConnection::end_response(const HeaderBlock* trailers) {
  if (x().response_framing != BodyFraming::chunked) return;
  if (x().upstream_chunked && trailers && trailers->size() > 0) {
    // Trailer fields go on as trailers of the chunked response (HTTP/1.1 clients only: an
    // HTTP/1.0 client's response is not chunked and has nowhere to carry them).
    write_last_chunk(b().scratch, *trailers);
    b().out.add_copy(b().scratch);
    x().bytes_out += b().scratch.size();
  } else {
    b().out.add_copy("0\r\n\r\n");
  }
}

void ClientConnection::send_tunnel_data(const char* data, std::size_t len) {
  b().out.add(data, len);
  arm_timer(listener_.view->config->idle_timeout_ms);
}

bool ClientConnection::drop_unsent_response() {
  // Only the response head (and body pieces of the same read) are in the batch: drop them.
  // An interim response or 100 Continue queued with them is dropped too; the local reply is
  // a valid final answer without it.
  x().bytes_out -= std::min(x().bytes_out, static_cast<std::uint64_t>(b().out.bytes()));
  b().out.clear();
  return true;
}

}  // namespace bulwark
