// Per-request working memory. A worker keeps a free list of these; a connection takes one
// when a request starts and gives it back when it goes idle, so buffers stay warm (no
// allocation per request) while idle keep-alive connections hold none.
#pragma once

#include <uv.h>

#include <string>

#include "http/headers.h"
#include "net/write_queue.h"

namespace bulwark {

// Per-request working memory, reused across requests and connections of a worker.
struct RequestBuffers {
  HeaderBlock headers;
  std::string url;
  std::string upstream_head;   // serialized upstream request head
  std::string response_head;   // serialized response head or local reply
  std::string scratch;         // an interim response head or a trailer section, then copied
  std::string resume_input;    // pipelined bytes being parsed
  std::string queued_bytes;    // request bytes read while waiting for admission or a connection
  std::string pending_detail;  // detail of a local reply decided before the request completed
  std::string endpoint_name;   // of the last attempt, for the log
  std::string replay;          // request body bytes kept for a retry (up to retry.max_body_bytes)
  uv_timer_t attempt_timer;    // per-try timeout and retry back-off; initialised by the worker
  OutBatch out;                // towards the client
  RequestInfo info;
  char request_id[36];
};

}  // namespace bulwark
