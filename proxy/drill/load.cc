#include "drill/load.h"

#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>

namespace bulwark::drill {
namespace {

enum State : std::uint8_t { kPending, kActive, kDone };

constexpr std::size_t kReadBuffer = 64 * 1024;

}  // namespace

struct LoadGenerator::Conn {
  LoadGenerator* gen = nullptr;
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  llhttp_t parser{};
  std::int64_t req = -1;  // the request in flight
  bool connected = false, closing = false;
  std::size_t idle_pos = SIZE_MAX;
  bool in_reason = false, header_was_value = false;
  std::string field, reason;
  int status = 0;
};

Outcome classify(int status, const std::string& reason) {
  if (!reason.empty()) {
    if (reason == "overloaded") return Outcome::shed;
    if (reason == "rate-limited") return Outcome::rate_limited;
    if (reason == "circuit-open") return Outcome::circuit_open;
    return Outcome::local_error;
  }
  if (status >= 500) return Outcome::upstream_5xx;
  if (status >= 400) return Outcome::upstream_4xx;
  return Outcome::ok;
}

LoadGenerator::LoadGenerator(uv_loop_t* loop, Options options, std::vector<Record>& records,
                             std::vector<std::string> texts, std::size_t priorities,
                             std::string key_header, std::uint64_t keys)
    : loop_(loop),
      options_(options),
      records_(records),
      texts_(std::move(texts)),
      priorities_(std::max<std::size_t>(priorities, 1)),
      key_header_(std::move(key_header)),
      keys_(keys) {
  llhttp_settings_init(&settings_);
  settings_.on_status = on_status;
  settings_.on_header_field = on_header_field;
  settings_.on_header_value = on_header_value;
  settings_.on_message_complete = on_message_complete;
  uv_timer_init(loop_, &tick_);
  uv_check_init(loop_, &check_);
  tick_.data = this;
  check_.data = this;
  timeout_ns_ = static_cast<std::uint64_t>(options_.timeout_s * 1e9);
}

LoadGenerator::~LoadGenerator() = default;

void LoadGenerator::start(std::uint64_t start_ns, std::function<void()> done) {
  start_ns_ = start_ns;
  done_ = std::move(done);
  end_ = records_.size();
  carriers_.assign(records_.size(), nullptr);
  running_ = true;
  uv_timer_start(&tick_, on_tick, 0, 1);
  uv_check_start(&check_, on_check);
  maybe_done();
}

void LoadGenerator::stop_scheduling() {
  for (std::uint64_t i = next_; i < end_; ++i) {
    records_[i].state = kDone;
    records_[i].outcome = Outcome::overflow;
  }
  end_ = next_;
  maybe_done();
}

void LoadGenerator::shutdown() {
  running_ = false;
  uv_timer_stop(&tick_);
  uv_check_stop(&check_);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&tick_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  }
  std::vector<Conn*> idle = idle_;
  for (Conn* c : idle) close(c, Outcome::conn_error, false);
}

void LoadGenerator::on_tick(uv_timer_t* t) {
  auto* self = static_cast<LoadGenerator*>(t->data);
  self->expire();
  self->start_due();
}

void LoadGenerator::on_check(uv_check_t* c) { static_cast<LoadGenerator*>(c->data)->start_due(); }

void LoadGenerator::start_due() {
  if (!running_) return;
  std::uint64_t now = now_ns();
  while (next_ < end_ && records_[next_].sched_ns <= now) {
    std::uint64_t i = next_++;
    Record& r = records_[i];
    std::int64_t lag = static_cast<std::int64_t>(now - r.sched_ns);
    max_lag_ns_ = std::max(max_lag_ns_, lag);
    if (!idle_.empty()) {
      Conn* c = idle_.back();
      idle_remove(c);
      r.state = kActive;
      ++active_;
      inflight_.push_back(i);
      send(c, i);
    } else if (open_ < options_.max_connections) {
      r.state = kActive;
      ++active_;
      inflight_.push_back(i);
      open(i);
    } else {
      r.state = kDone;
      r.outcome = Outcome::overflow;
    }
  }
  maybe_done();
}

void LoadGenerator::expire() {
  std::uint64_t now = now_ns();
  while (!inflight_.empty()) {
    std::uint64_t i = inflight_.front();
    Record& r = records_[i];
    if (r.state == kActive && r.sched_ns + timeout_ns_ > now) break;
    inflight_.pop_front();
    if (r.state != kActive) continue;
    if (Conn* c = carriers_[i]) close(c, Outcome::timeout, true);
    else finish(i, 0, "", Outcome::timeout);
  }
  maybe_done();
}

void LoadGenerator::open(std::uint64_t i) {
  auto* c = new Conn;
  c->gen = this;
  c->req = static_cast<std::int64_t>(i);
  c->tcp.data = c;
  c->connect_req.data = c;
  llhttp_init(&c->parser, HTTP_RESPONSE, &settings_);
  c->parser.data = c;
  ++open_;
  carriers_[i] = c;
  uv_tcp_init(loop_, &c->tcp);
  uv_tcp_nodelay(&c->tcp, 1);
  int rc = uv_tcp_connect(&c->connect_req, &c->tcp,
                          reinterpret_cast<const sockaddr*>(&options_.address), on_connect);
  if (rc != 0) close(c, Outcome::conn_error, false);
}

void LoadGenerator::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  LoadGenerator* self = c->gen;
  if (c->closing) return;
  if (status != 0) return self->close(c, Outcome::conn_error, false);
  c->connected = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
        static thread_local char storage[kReadBuffer];
        *buf = uv_buf_init(storage, sizeof storage);
      },
      on_read);
  if (c->req >= 0) self->send(c, static_cast<std::uint64_t>(c->req));
}

void LoadGenerator::send(Conn* c, std::uint64_t i) {
  c->req = static_cast<std::int64_t>(i);
  carriers_[i] = c;
  c->status = 0;
  if (!c->connected) return;  // sent once connected
  const Record& r = records_[i];
  const std::string& base = texts_[r.path * priorities_ + r.priority];
  const std::string* text = &base;
  if (!key_header_.empty() && keys_ > 0) {
    request_.assign(base);
    request_ += key_header_;
    request_ += ": key-";
    request_ += std::to_string(i % keys_ + 1);
    request_ += "\r\n\r\n";
    text = &request_;
  } else {
    request_.assign(base);
    request_ += "\r\n";
    text = &request_;
  }
  uv_buf_t b = uv_buf_init(const_cast<char*>(text->data()), static_cast<unsigned>(text->size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  if (n == static_cast<int>(text->size())) return;
  if (n < 0 && n != UV_EAGAIN) return close(c, Outcome::conn_error, false);
  // Rare (a request is small): the rest is written when the socket takes it, from a copy.
  std::size_t sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  struct Pending {
    uv_write_t req;
    std::string bytes;
  };
  auto* w = new Pending;
  w->bytes.assign(text->data() + sent, text->size() - sent);
  w->req.data = c;
  uv_buf_t rest = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &rest, 1,
               [](uv_write_t* req, int status) {
                 auto* p = reinterpret_cast<Pending*>(req);
                 auto* conn = static_cast<Conn*>(req->data);
                 delete p;
                 if (status < 0 && !conn->closing) conn->gen->close(conn, Outcome::conn_error, false);
               }) != 0) {
    delete w;
    close(c, Outcome::conn_error, false);
  }
}

void LoadGenerator::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  LoadGenerator* self = c->gen;
  if (c->closing) return;
  if (n < 0) {
    // A response delimited by the connection's end completes in llhttp_finish.
    if (n == UV_EOF && c->req >= 0) llhttp_finish(&c->parser);
    return self->close(c, Outcome::conn_error, false);  // nothing if that closed it already
  }
  if (n == 0) return;
  if (c->req < 0) return self->close(c, Outcome::conn_error, false);  // bytes nobody asked for
  llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, static_cast<std::size_t>(n));
  if (err == HPE_PAUSED) {
    // The response ended (on_message_complete pauses): the connection is idle or closed now;
    // bytes after it were not asked for.
    const char* stop = llhttp_get_error_pos(&c->parser);
    llhttp_resume(&c->parser);
    if (!c->closing && stop != nullptr && stop < buf->base + n)
      self->close(c, Outcome::conn_error, false);
    return;
  }
  if (err != HPE_OK) self->close(c, Outcome::conn_error, false);
}

int LoadGenerator::on_status(llhttp_t* p, const char*, std::size_t) {
  auto* c = static_cast<Conn*>(p->data);
  c->status = p->status_code;
  return 0;
}

int LoadGenerator::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  auto* c = static_cast<Conn*>(p->data);
  if (c->header_was_value) c->field.clear();
  c->header_was_value = false;
  c->field.append(at, len);
  return 0;
}

int LoadGenerator::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  auto* c = static_cast<Conn*>(p->data);
  if (!c->header_was_value) c->in_reason = strcasecmp(c->field.c_str(), "x-bulwark-reason") == 0;
  c->header_was_value = true;
  if (c->in_reason) c->reason.append(at, len);
  return 0;
}

int LoadGenerator::on_message_complete(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  LoadGenerator* self = c->gen;
  int status = p->status_code;
  bool keep = llhttp_should_keep_alive(p) != 0;
  std::string reason = std::move(c->reason);
  c->reason.clear();
  c->field.clear();
  c->in_reason = c->header_was_value = false;
  if (status < 200) return 0;  // 1xx: the final response follows
  if (c->req >= 0) {
    auto i = static_cast<std::uint64_t>(c->req);
    c->req = -1;
    self->carriers_[i] = nullptr;
    self->finish(i, status, reason, Outcome::ok);
  }
  if (!keep || !self->running_) self->close(c, Outcome::conn_error, false);
  else self->idle_push(c);
  self->maybe_done();
  return HPE_PAUSED;
}

void LoadGenerator::finish(std::uint64_t i, int status, const std::string& reason,
                           Outcome client_outcome) {
  Record& r = records_[i];
  if (r.state != kActive) return;
  r.state = kDone;
  std::uint64_t now = now_ns();
  std::uint64_t lat = (now > r.sched_ns ? now - r.sched_ns : 0) / 1000;
  r.latency_us = static_cast<std::uint32_t>(std::min<std::uint64_t>(lat, UINT32_MAX - 1));
  r.status = static_cast<std::uint16_t>(status);
  r.reason = reason_id(reason);
  r.outcome = status == 0 ? client_outcome : classify(status, reason);
  --active_;
}

void LoadGenerator::close(Conn* c, Outcome outcome, bool reset) {
  if (c->closing) return;
  c->closing = true;
  idle_remove(c);
  if (c->req >= 0) {
    auto i = static_cast<std::uint64_t>(c->req);
    carriers_[i] = nullptr;
    finish(i, 0, "", outcome);
    c->req = -1;
  }
  --open_;
  if (reset && c->connected) {
    struct linger l = {1, 0};
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
           [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
  maybe_done();
}

void LoadGenerator::idle_push(Conn* c) {
  c->idle_pos = idle_.size();
  idle_.push_back(c);
}

void LoadGenerator::idle_remove(Conn* c) {
  if (c->idle_pos == SIZE_MAX) return;
  Conn* last = idle_.back();
  idle_[c->idle_pos] = last;
  last->idle_pos = c->idle_pos;
  idle_.pop_back();
  c->idle_pos = SIZE_MAX;
}

std::uint8_t LoadGenerator::reason_id(const std::string& reason) {
  auto it = reason_ids_.find(reason);
  if (it != reason_ids_.end()) return it->second;
  if (reasons_.size() >= 255) return 0;
  auto id = static_cast<std::uint8_t>(reasons_.size());
  reasons_.push_back(reason);
  reason_ids_.emplace(reason, id);
  return id;
}

void LoadGenerator::maybe_done() {
  if (finished_ || !done_ || next_ < end_ || active_ > 0) return;
  finished_ = true;
  uv_timer_stop(&tick_);
  uv_check_stop(&check_);
  auto done = std::move(done_);
  done();
}

}  // namespace bulwark::drill
