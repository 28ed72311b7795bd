// Creates bound, listening TCP sockets. With several workers each gets its own socket on
// the same address (SO_REUSEPORT), so the kernel spreads connections without a shared lock.
#pragma once

#include <string>

#include "net/address.h"

namespace bulwark {

// Returns a listening socket fd, or -1 with `error` set. `reuse_port` lets more sockets bind
// the same address. The bound address (with the real port when 0 was asked) goes to `bound`.
int open_listen_socket(const Address& address, bool reuse_port, int backlog, Address& bound,
                       std::string& error);

}  // namespace bulwark
