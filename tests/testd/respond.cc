// bulwark-testd: the answer to one request (see testd.cc for the parameters it reads).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "capacity.h"
#include "checksum.h"
#include "server.h"
#include "text.h"

namespace testd {

void finish_response(Conn* c) {
  c->busy = false;
  if (c->close_after) {
    // Close once the queued bytes are written.
    auto* req = new uv_shutdown_t;
    req->data = c;
    if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&c->tcp), [](uv_shutdown_t* r, int) {
          auto* cc = static_cast<Conn*>(r->data);
          delete r;
          conn_close(cc);
        }) != 0) {
      delete req;
      conn_close(c);
    }
    return;
  }
  if (g_idle_close_ms)
    uv_timer_start(
        &c->timer, [](uv_timer_t* t) { conn_close(static_cast<Conn*>(t->data)); }, g_idle_close_ms,
        0);
  if (c->in_execute) return;  // process() goes on with the bytes after this request
  llhttp_resume(&c->parser);
  if (!c->pending.empty()) {
    std::string p;
    p.swap(c->pending);
    process(c, p.data(), p.size());
  }
}

void continue_generate(Conn* c) {
  while (c->remaining > 0 && c->queued < 256 * 1024 && !c->closing) {
    std::uint64_t n = c->remaining < 16384 ? c->remaining : 16384;
    if (c->reset_half && c->offset >= (c->offset + c->remaining) / 2 && c->offset > 0) {
      conn_reset(c);
      return;
    }
    std::string out;
    if (c->gen_chunked) {
      char h[32];
      std::snprintf(h, sizeof h, "%llx\r\n", static_cast<unsigned long long>(n));
      out += h;
    }
    std::size_t start = static_cast<std::size_t>(c->offset % 251);
    out.append(pattern_block + start, static_cast<std::size_t>(n));
    if (c->gen_chunked) out += "\r\n";
    c->offset += n;
    c->remaining -= n;
    send(c, std::move(out));
  }
  if (c->remaining == 0 && !c->closing) {
    if (c->reset_half) {
      conn_reset(c);
      return;
    }
    if (c->gen_chunked) send(c, "0\r\n\r\n");
    finish_response(c);
  }
}

void respond(Conn* c) {
  ++g_requests;
  std::string path = c->path();
  int status = 200;
  std::string body;
  std::string extra;
  std::string path_now = c->path();
  bool control = path_now.rfind("/__", 0) == 0;
  std::string reset = control ? "" : c->param("reset");  // /__mode?reset=... sets, not resets
  if (reset.empty() && !control) reset = g_mode_reset;
  if (reset == "before" || (reset == "reused" && c->served > 0)) {
    conn_reset(c);
    return;
  }
  ++c->served;
  if (path == "/__stats") {
    body = "{\"connections_total\":" + std::to_string(g_connections_total) +
           ",\"connections_open\":" + std::to_string(g_connections_open) +
           ",\"requests\":" + std::to_string(g_requests) + "}";
  } else if (path == "/__mode") {
    // /__mode?status=500 | ?reset=before|after | ?delay=MS; /__mode alone clears all.
    g_mode_status = std::atoi(c->param("status").c_str());
    g_mode_reset = c->param("reset");
    g_default_delay_ms = std::strtoull(c->param("delay").c_str(), nullptr, 10);
    body = "mode status=" + std::to_string(g_mode_status) + " reset=" + g_mode_reset +
           " delay=" + std::to_string(g_default_delay_ms) + "\n";
  } else if (path == "/__down") {
    std::uint64_t ms = std::strtoull(c->param("ms").c_str(), nullptr, 10);
    go_down(ms);
    body = "down for " + std::to_string(ms) + " ms\n";
  } else if (path == "/__health") {
    std::string s = c->param("status");
    if (!s.empty()) g_health_status = std::atoi(s.c_str());
    std::string d = c->param("delay");
    if (!d.empty()) g_health_delay_ms = std::strtoull(d.c_str(), nullptr, 10);
    body = "health " + std::to_string(g_health_status) + "\n";
  } else if (path == "/__capacity") {
    body = testd::capacity_control(c->param("c"), c->param("service_ms"), status);
  } else if (path == "/healthz") {
    status = g_health_status;
    body = status < 400 ? "ok\n" : "unhealthy\n";
  } else if (c->param("headers") == "1") {
    body = "{\"method\":\"" +
           std::string(llhttp_method_name(static_cast<llhttp_method_t>(c->parser.method))) +
           "\",\"url\":\"" + json_escape(c->url) + "\",\"version\":\"1." +
           std::to_string(c->parser.http_minor) + "\",\"headers\":[";
    for (std::size_t i = 0; i < c->headers.size(); ++i) {
      if (i) body += ",";
      body += "[\"" + json_escape(c->headers[i].first) + "\",\"" +
              json_escape(c->headers[i].second) + "\"]";
    }
    body += "]}";
  }
  std::string st = control ? "" : c->param("status");
  if (!st.empty())
    status = std::atoi(st.c_str());
  else if (g_mode_status && !control && path != "/healthz")
    status = g_mode_status;
  std::uint64_t size = std::strtoull(c->param("size").c_str(), nullptr, 10);
  bool chunked = c->param("chunked") == "1";
  bool eof = c->param("eof") == "1";
  bool http10 = c->param("http10") == "1";  // an HTTP/1.0 server: no keep-alive
  c->close_after =
      c->param("close") == "1" || eof || http10 || !llhttp_should_keep_alive(&c->parser);
  c->reset_half = reset == "after";
  extra += "x-testd-name: " + g_name + "\r\n";
  std::string retry_after = c->param("retry_after");
  if (!retry_after.empty()) extra += "Retry-After: " + retry_after + "\r\n";
  extra += "x-testd-body-bytes: " + std::to_string(c->body_bytes) + "\r\n";
  extra += "x-testd-body-crc32: " + hex(c->body_crc) + "\r\n";
  std::string head =
      (http10 ? "HTTP/1.0 " : "HTTP/1.1 ") + std::to_string(status) + " Status\r\n" + extra;
  bool head_method = c->parser.method == HTTP_HEAD;
  if (size > 0) {
    head += "x-testd-crc32: " + hex(testd::pattern_crc(pattern_block, size)) + "\r\n";
    if (chunked)
      head += "Transfer-Encoding: chunked\r\n";
    else if (!eof)
      head += "Content-Length: " + std::to_string(size) + "\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head);
    if (head_method) {
      finish_response(c);
      return;
    }
    c->remaining = size;
    c->offset = 0;
    c->gen_chunked = chunked;
    continue_generate(c);
    return;
  }
  if (chunked && !body.empty()) {
    char h[32];
    std::snprintf(h, sizeof h, "%zx\r\n", body.size());
    head += "Transfer-Encoding: chunked\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head + (head_method ? "" : h + body + "\r\n0\r\n\r\n"));
  } else {
    if (!eof) head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head + (head_method ? "" : body));
  }
  if (c->reset_half) {
    conn_reset(c);
    return;
  }
  finish_response(c);
}

}  // namespace testd
