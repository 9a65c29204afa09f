#pragma once
// Whether a client has closed its connection while its non-streamed request is still running.
// cpp-httplib 0.11 (Debian's) shows a handler nothing of its socket: the socket is found among the
// process's descriptors by its two ends (the request's remote and local address and port) and
// peeked at without reading, so that the request's sequence can be freed (a streamed request
// notices at its next write instead).
#include <string>

namespace kvsqueeze::server {

class ConnectionProbe {
 public:
  ConnectionProbe(std::string remote_addr, int remote_port, int local_port)
      : remote_addr_(std::move(remote_addr)), remote_port_(remote_port), local_port_(local_port) {}
  // True once the peer has closed or reset the connection; false while it is open or when the
  // socket cannot be found.
  bool client_gone();

 private:
  bool is_ours(int fd) const;
  std::string remote_addr_;
  int remote_port_, local_port_;
  int fd_ = -1;  // found on the first call, checked again before every peek
};

}  // namespace kvsqueeze::server
