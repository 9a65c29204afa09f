#include "connection_probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

namespace kvsqueeze::server {
namespace {

// The address and port of a socket's end, as httplib writes them (inet_ntop).
bool end_of(const sockaddr_storage& a, std::string* addr, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &v4.sin_addr, buf, sizeof buf);
    *port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &v6.sin6_addr, buf, sizeof buf);
    *port = ntohs(v6.sin6_port);
  } else {
    return false;
  }
  *addr = buf;
  return true;
}

}  // namespace

bool ConnectionProbe::is_ours(int fd) const {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_storage local{}, peer{};
  socklen_t ll = sizeof local, pl = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0)
    return false;
  std::string local_addr, peer_addr;
  int local_port = -1, peer_port = -1;
  return end_of(local, &local_addr, &local_port) && end_of(peer, &peer_addr, &peer_port) && local_port == local_port_ &&
         peer_port == remote_port_ && peer_addr == remote_addr_;
}

bool ConnectionProbe::client_gone() {
  if (fd_ < 0 || !is_ours(fd_)) {
    fd_ = -1;
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return false;
    while (dirent* e = readdir(dir)) {
      char* end = nullptr;
      const long fd = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
      if (is_ours(static_cast<int>(fd))) {
        fd_ = static_cast<int>(fd);
        break;
      }
    }
    closedir(dir);
    if (fd_ < 0) return false;
  }
  char c;
  const ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;  // orderly close
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

}  // namespace kvsqueeze::server
