#include "net/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace bulwark {

int Address::port() const {
  if (storage.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (storage.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  return 0;
}

std::string ip_string(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, buf, sizeof buf);
  } else if (addr->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

std::string Address::to_string() const {
  if (!valid()) return "";
  std::string ip = ip_string(sockaddr_ptr());
  if (storage.ss_family == AF_INET6) ip = "[" + ip + "]";
  return ip + ":" + std::to_string(port());
}

bool split_host_port(std::string_view text, std::string& host, int& port, std::string& error) {
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      error = "expected [IPv6]:PORT";
      return false;
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = "expected HOST:PORT";
      return false;
    }
    host = std::string(text.substr(0, colon));
    if (host.find(':') != std::string::npos) {
      error = "IPv6 addresses must be written [ADDR]:PORT";
      return false;
    }
    port_text = text.substr(colon + 1);
  }
  if (host.empty()) {
    error = "missing host";
    return false;
  }
  int value = -1;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      value < 0 || value > 65535) {
    error = "invalid port '" + std::string(port_text) + "'";
    return false;
  }
  port = value;
  return true;
}

static bool numeric(const std::string& host, int port, Address& out) {
  std::memset(&out.storage, 0, sizeof out.storage);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.length = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

bool parse_ip_address(std::string_view text, Address& out, std::string& error) {
  std::string host;
  int port = 0;
  if (!split_host_port(text, host, port, error)) return false;
  if (!numeric(host, port, out)) {
    error = "'" + host + "' is not an IP address";
    return false;
  }
  return true;
}

}  // namespace bulwark
