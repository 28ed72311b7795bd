#include "net/write_queue.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "net/tls.h"

namespace bulwark {
namespace {

// A queued write and its bytes in one allocation: the bytes follow the header.
struct QueuedWrite {
  uv_write_t req;
  std::size_t len;
  char* data() { return reinterpret_cast<char*>(this + 1); }
};

// What the socket takes at once, sent with send()/sendmsg() rather than libuv's write()/writev():
// the socket calls skip the file layer (position lock, permission and fsnotify hooks) that a
// write on a socket descriptor goes through, measurably cheaper per request (docs/performance.md).
// UV_EAGAIN while libuv still has writes (or the connect) queued, which keeps the order.
int try_send(uv_stream_t* stream, uv_buf_t* bufs, std::size_t nbufs) {
  if (stream->connect_req != nullptr || stream->write_queue_size != 0) return UV_EAGAIN;
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(stream), &fd) != 0) return UV_EBADF;
  ssize_t n;
  do {
    if (nbufs == 1) {
      n = ::send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      msghdr msg{};
      // uv_buf_t is laid out as struct iovec on Unix.
      msg.msg_iov = reinterpret_cast<iovec*>(bufs);
      msg.msg_iovlen = nbufs < IOV_MAX ? nbufs : IOV_MAX;  // the rest is queued
      n = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return static_cast<int>(n);
  if (errno == ENOTSOCK)  // a pipe or a file: libuv's write
    return uv_try_write(stream, bufs, static_cast<unsigned>(nbufs));
  return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

}  // namespace

void OutBatch::add(const char* data, std::size_t len) {
  if (len == 0) return;
  pieces_.push_back({data, len, 0, false});
  bytes_ += len;
}

void OutBatch::add_copy(std::string_view s) {
  if (s.empty()) return;
  // Merge with a directly preceding scratch piece to keep the iovec short.
  if (!pieces_.empty() && pieces_.back().in_scratch &&
      pieces_.back().scratch_offset + pieces_.back().len == scratch_.size()) {
    pieces_.back().len += s.size();
  } else {
    pieces_.push_back({nullptr, s.size(), scratch_.size(), true});
  }
  scratch_.append(s);
  bytes_ += s.size();
}

void OutBatch::add_chunk_header(std::size_t size) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", size);
  add_copy(std::string_view(buf, static_cast<std::size_t>(n)));
}

void OutBatch::append_to(std::string& out) const {
  for (const Piece& p : pieces_)
    out.append(p.in_scratch ? scratch_.data() + p.scratch_offset : p.base, p.len);
}

void OutBatch::clear() {
  pieces_.clear();
  scratch_.clear();
  bytes_ = 0;
}

namespace {

// Sends what the socket takes of `bufs` (`total` bytes) now and queues a copy of the rest
// with uv_write (`cb` runs when it is written). 0 or a libuv error code.
int send_or_queue(uv_stream_t* stream, uv_buf_t* bufs, std::size_t nbufs, std::size_t total,
                  uv_write_cb cb) {
  std::size_t written = 0;
  int rc = try_send(stream, bufs, nbufs);
  if (rc >= 0) {
    written = static_cast<std::size_t>(rc);
  } else if (rc != UV_EAGAIN) {
    return rc;
  }
  if (written >= total) return 0;
  std::size_t rest = total - written;
  auto* q = static_cast<QueuedWrite*>(std::malloc(sizeof(QueuedWrite) + rest));
  if (!q) return UV_ENOMEM;  // the caller closes the stream, as for any write error
  q->len = rest;
  std::size_t skip = written, at = 0;
  for (std::size_t i = 0; i < nbufs; ++i) {
    std::size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    std::memcpy(q->data() + at, bufs[i].base + skip, len - skip);
    at += len - skip;
    skip = 0;
  }
  uv_buf_t buf = uv_buf_init(q->data(), static_cast<unsigned>(rest));
  int result = uv_write(&q->req, stream, &buf, 1, cb);
  if (result != 0) std::free(q);
  return result;
}

}  // namespace

int OutBatch::flush(uv_stream_t* stream, uv_write_cb cb) {
  if (pieces_.empty()) return 0;
  bufs_.clear();
  for (const Piece& p : pieces_) {
    const char* base = p.in_scratch ? scratch_.data() + p.scratch_offset : p.base;
    bufs_.push_back(uv_buf_init(const_cast<char*>(base), static_cast<unsigned>(p.len)));
  }
  int result = send_or_queue(stream, bufs_.data(), bufs_.size(), bytes_, cb);
  clear();
  return result;
}

int OutBatch::flush(TlsSession& tls, uv_stream_t* stream, uv_write_cb cb) {
  if (pieces_.empty()) return send_tls_output(tls, stream, cb);
  // Small pieces (a head, chunk framing) are gathered into records of up to 16 KiB, so a
  // response does not cost a record per piece; large ones are encrypted in place.
  constexpr std::size_t kRecord = 16 * 1024;
  thread_local std::string gather;
  gather.clear();
  bool ok = true;
  for (const Piece& p : pieces_) {
    const char* base = p.in_scratch ? scratch_.data() + p.scratch_offset : p.base;
    if (gather.size() + p.len <= kRecord) {
      gather.append(base, p.len);
      continue;
    }
    if (!gather.empty()) ok = ok && tls.write(gather.data(), gather.size());
    gather.clear();
    if (p.len < kRecord)
      gather.append(base, p.len);
    else
      ok = ok && tls.write(base, p.len);
  }
  if (!gather.empty()) ok = ok && tls.write(gather.data(), gather.size());
  clear();
  if (!ok) {
    tls.drop_output();
    return UV_EPROTO;
  }
  return send_tls_output(tls, stream, cb);
}

int send_tls_output(TlsSession& tls, uv_stream_t* stream, uv_write_cb cb) {
  std::string_view out = tls.output();
  if (out.empty()) return 0;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(out.data()), static_cast<unsigned>(out.size()));
  int rc = send_or_queue(stream, &buf, 1, out.size(), cb);
  tls.drop_output();
  return rc;
}

int send_bytes(uv_stream_t* stream, const char* data, std::size_t len, uv_write_cb cb) {
  if (len == 0) return 0;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
  return send_or_queue(stream, &buf, 1, len, cb);
}

void free_queued_write(uv_write_t* req) { std::free(reinterpret_cast<QueuedWrite*>(req)); }

}  // namespace bulwark
