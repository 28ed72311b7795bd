#include "net/listener.h"

#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bulwark {

bool out_of_local_resources(int err) {
  if (err < 0) err = -err;  // libuv codes are negated errno values on Unix
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

int open_listen_socket(const Address& address, bool reuse_port, int backlog, Address& bound,
                       std::string& error) {
  int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, address.sockaddr_ptr(), address.length) != 0) {
    error = "bind " + address.to_string() + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (::listen(fd, backlog) != 0) {
    error = "listen " + address.to_string() + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  bound.length = sizeof bound.storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound.storage), &bound.length);
  return fd;
}

}  // namespace bulwark
