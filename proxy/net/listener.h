// Creates bound, listening TCP sockets. With several workers each gets its own socket on
// the same address (SO_REUSEPORT), so the kernel spreads connections without a shared lock.
#pragma once

#include <string>

#include "net/address.h"

namespace bulwark {

// True for the errors that mean Bulwark itself is out of descriptors or socket memory
// (EMFILE, ENFILE, ENOBUFS, ENOMEM; `err` as errno or as a negative libuv code). Such a
// failure is never the peer's fault: answered 503 overloaded, never counted against it.
bool out_of_local_resources(int err);

// Returns a listening socket fd, or -1 with `error` set. `reuse_port` lets more sockets bind
// the same address. The bound address (with the real port when 0 was asked) goes to `bound`.
int open_listen_socket(const Address& address, bool reuse_port, int backlog, Address& bound,
                       std::string& error);

}  // namespace bulwark
