// OutBatch gathers the pieces of one outgoing write — framing bytes and body slices that
// point into the read buffer — and sends them with a single send or sendmsg. Bytes the socket
// does not take at once are copied into one block and queued with uv_write, so the
// common case (a socket with room) copies no body bytes and allocates nothing.
#pragma once

#include <uv.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark {

class TlsSession;

// Backpressure bounds: a side stops reading while the other side has more than the high
// mark queued, and resumes once it is below the low mark.
inline constexpr std::size_t kHighWater = 256 * 1024;
inline constexpr std::size_t kLowWater = 64 * 1024;
// Size of the per-worker read buffer shared by every socket of the worker.
inline constexpr std::size_t kReadBufferSize = 64 * 1024;

class OutBatch {
 public:
  // Borrowed: the bytes must stay valid until flush().
  void add(const char* data, std::size_t len);
  void add(std::string_view s) { add(s.data(), s.size()); }
  // Copied into the batch's own scratch space (small framing bytes).
  void add_copy(std::string_view s);
  // "<hex size>\r\n" for chunked framing.
  void add_chunk_header(std::size_t size);
  bool empty() const { return pieces_.empty(); }
  std::size_t bytes() const { return bytes_; }
  void clear();
  // Appends a copy of every piece to `out` (bytes that must outlive the pieces).
  void append_to(std::string& out) const;
  // Calls f(data, len) for every piece, in order; false from f stops (and each() says so).
  template <class F>
  bool each(F&& f) const {
    for (const Piece& p : pieces_)
      if (!f(p.in_scratch ? scratch_.data() + p.scratch_offset : p.base, p.len)) return false;
    return true;
  }

  // Writes everything; what cannot be written now is queued and `cb` runs when it is done
  // (the queued block is freed before cb). Returns 0 or a libuv error code.
  int flush(uv_stream_t* stream, uv_write_cb cb);
  // The same through TLS: the pieces are encrypted (small ones gathered into one record) and
  // the ciphertext is sent or queued.
  int flush(TlsSession& tls, uv_stream_t* stream, uv_write_cb cb);

 private:
  struct Piece {
    const char* base;
    std::size_t len;
    std::size_t scratch_offset;
    bool in_scratch;
  };
  std::vector<Piece> pieces_;
  std::vector<uv_buf_t> bufs_;
  std::string scratch_;
  std::size_t bytes_ = 0;
};

// Sends `len` bytes; what the socket does not take at once is copied and queued, and `cb` runs
// when it is written. 0 or a libuv error code.
int send_bytes(uv_stream_t* stream, const char* data, std::size_t len, uv_write_cb cb);

// Sends (or queues) the ciphertext `tls` has waiting: handshake messages, alerts.
int send_tls_output(TlsSession& tls, uv_stream_t* stream, uv_write_cb cb);

// Frees the queued block of a write started by OutBatch::flush. Call first in the uv_write_cb.
void free_queued_write(uv_write_t* req);

}  // namespace bulwark
