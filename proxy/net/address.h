// A socket address (IPv4 or IPv6) parsed from "host:port" or "[v6]:port".
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <string_view>

namespace bulwark {

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage); }
  bool valid() const { return length != 0; }
  int port() const;
  // "ip:port" or "[ip6]:port".
  std::string to_string() const;
};

// Splits "host:port" / "[v6]:port". Returns false with a message when malformed.
bool split_host_port(std::string_view text, std::string& host, int& port, std::string& error);

// Parses a numeric address (no DNS). Returns false with a message if it is not one.
bool parse_ip_address(std::string_view text, Address& out, std::string& error);

// The textual IP of a peer (no port), written into buf; returns its length.
std::string ip_string(const sockaddr* addr);

}  // namespace bulwark
