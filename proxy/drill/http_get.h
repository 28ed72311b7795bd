// One HTTP/1.1 GET on a connection of its own (Connection: close), for scraping /metrics and
// for fault actions such as bulwark-testd's /__mode. The callback runs once, with the status
// (0 on failure), the body (at most 8 MiB kept) and an error text when it failed.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <functional>
#include <string>

namespace bulwark::drill {

struct Url;

using GetCallback = std::function<void(int status, std::string body, std::string error)>;

// `address` is the resolved address of url.host:url.port. Gives up after `timeout_ms`.
void http_get(uv_loop_t* loop, const sockaddr_storage& address, const Url& url,
              std::uint64_t timeout_ms, GetCallback done);

// Resolves HOST:PORT (blocking; used before the run starts). False with `error` on failure.
bool resolve(const std::string& host, std::uint16_t port, sockaddr_storage& out,
             std::string& error);

}  // namespace bulwark::drill
