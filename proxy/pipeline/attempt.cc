#include "pipeline/attempt.h"

#include "pipeline/exchange.h"

namespace bulwark {

void Attempt::on_upstream_connected() { x_.on_upstream_connected(); }
void Attempt::on_upstream_interim(UpstreamStream& c) { x_.on_upstream_interim(c); }
void Attempt::on_upstream_headers(UpstreamStream& c) { x_.on_upstream_headers(c); }
void Attempt::on_upstream_chunk_header(std::uint64_t size) { x_.on_upstream_chunk_header(size); }
void Attempt::on_upstream_body(const char* data, std::size_t len) {
  x_.on_upstream_body(data, len);
}
void Attempt::on_upstream_chunk_complete() { x_.on_upstream_chunk_complete(); }
void Attempt::on_upstream_complete() { x_.on_upstream_complete(); }
void Attempt::on_upstream_tunnel_data(const char* data, std::size_t len) {
  x_.on_upstream_tunnel_data(data, len);
}
void Attempt::on_upstream_error(UpstreamError error, std::string_view detail) {
  x_.on_upstream_error(error, detail);
}
void Attempt::on_upstream_batch_end() { x_.on_upstream_batch_end(); }
void Attempt::on_upstream_drained() { x_.on_upstream_drained(); }
void Attempt::on_pool_connection(UpstreamStream* c) { x_.on_pool_connection(c); }
void Attempt::on_pool_failure(UpstreamError error) { x_.on_upstream_error(error, {}); }

}  // namespace bulwark
