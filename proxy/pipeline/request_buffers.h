// Per-request working memory. A worker keeps a free list of these; a connection takes one
// when a request starts and gives it back when it goes idle, so buffers stay warm (no
// allocation per request) while idle keep-alive connections hold none.
#pragma once

#include <uv.h>

#include <string>

#include "http/chunked.h"
#include "http/headers.h"
#include "net/write_queue.h"

namespace bulwark {

// Per-request working memory, reused across requests and connections of a worker.
struct RequestBuffers {
  HeaderBlock headers;
  std::string url;
  std::string upstream_head;    // serialized upstream request head
  std::string response_head;    // serialized response head or local reply
  std::string scratch;          // an interim response head or a trailer section, then copied
  std::string resume_input;     // pipelined bytes being parsed
  std::string queued_bytes;     // request bytes read while waiting for admission or a connection
  std::string pending_detail;   // detail of a local reply decided before the request completed
  std::string endpoint_name;    // of the last attempt, for the log
  std::string replay;           // request body bytes kept for a retry (up to retry.max_body_bytes)
  std::string trailers;         // forwarded request trailer lines ("Name: value\r\n"...)
  std::string request_id_copy;  // the client's X-Request-Id, owned
  ChunkedDecoder chunked;       // a chunked request body
  // One timer per purpose, initialised by the worker: the current attempt's per_try_timeout
  // (which also bounds reading the body of a response dropped for a retry), the back-off
  // before a retry, and an injected fault's delay.
  uv_timer_t per_try_timer;
  uv_timer_t backoff_timer;
  uv_timer_t fault_timer;
  void stop_timers() {
    uv_timer_stop(&per_try_timer);
    uv_timer_stop(&backoff_timer);
    uv_timer_stop(&fault_timer);
  }
  OutBatch out;                 // towards the client
  RequestInfo info;
  char request_id[36];
};

}  // namespace bulwark
