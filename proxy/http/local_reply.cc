#include "http/local_reply.h"

#include "core/json.h"
#include "http/headers.h"

namespace bulwark {
namespace {

struct ReasonInfo {
  std::string_view name;
  int status;
  std::string_view title;
};

constexpr ReasonInfo kReasons[kReasonCount] = {
    {"rate-limited", 429, "Rate limited"},
    {"overloaded", 503, "Upstream overloaded"},
    {"circuit-open", 503, "Circuit open"},
    {"no-healthy-upstream", 503, "No healthy upstream"},
    {"pending-overflow", 503, "Too many pending requests"},
    {"upstream-connect-failure", 502, "Upstream connect failure"},
    {"upstream-reset", 502, "Upstream reset"},
    {"upstream-protocol-error", 502, "Upstream protocol error"},
    {"upstream-timeout", 504, "Upstream timeout"},
    {"no-route", 404, "No route"},
    {"bad-request", 400, "Bad request"},
    {"request-timeout", 408, "Request timeout"},
    {"body-too-large", 413, "Request body too large"},
    {"header-too-large", 431, "Request header too large"},
    {"fault-injected", 503, "Fault injected"},
};

}  // namespace

std::string_view reason_name(Reason r) { return kReasons[static_cast<int>(r)].name; }
int reason_status(Reason r) { return kReasons[static_cast<int>(r)].status; }
std::string_view reason_title(Reason r) { return kReasons[static_cast<int>(r)].title; }

int local_reply_body(std::string& body, const LocalReply& reply) {
  const ReasonInfo& info = kReasons[static_cast<int>(reply.reason)];
  int status = reply.status ? reply.status : info.status;
  body.clear();
  body.reserve(160);
  body.append("{\"type\":");
  append_json_string(body, std::string("urn:bulwark:problem:").append(info.name));
  body.append(",\"title\":");
  append_json_string(body, info.title);
  body.append(",\"status\":").append(std::to_string(status));
  body.append(",\"detail\":");
  append_json_string(body, reply.detail.empty() ? info.title : reply.detail);
  if (!reply.request_id.empty()) {
    body.append(",\"request_id\":");
    append_json_string(body, reply.request_id);
  }
  body.append("}\n");
  return status;
}

int write_local_reply(std::string& out, const LocalReply& reply) {
  const ReasonInfo& info = kReasons[static_cast<int>(reply.reason)];
  std::string body;
  int status = local_reply_body(body, reply);
  out.clear();
  out.append(reply.minor_version == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
      .append(std::to_string(status))
      .append(" ")
      .append(status_reason(status))
      .append("\r\nContent-Type: application/problem+json\r\nx-bulwark-reason: ")
      .append(info.name)
      .append("\r\n");
  if (!reply.request_id.empty())
    out.append("X-Request-Id: ").append(reply.request_id).append("\r\n");
  out.append(reply.extra);
  out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  if (reply.close)
    out.append("Connection: close\r\n");
  else if (reply.minor_version == 0)
    out.append("Connection: keep-alive\r\n");
  out.append("\r\n");
  if (!reply.head_request) out.append(body);
  return status;
}

}  // namespace bulwark
