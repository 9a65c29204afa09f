#pragma once
// A progress bar with rate and ETA on stderr: redrawn in place on a terminal, otherwise a plain
// line at most every few seconds (logs stay readable).
#include <chrono>
#include <cstdint>
#include <string>

namespace kvsqueeze::eval {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();  // finishes the line
  void advance(int64_t n = 1, const std::string& status = "");
  // "[label] 12/40 30% 1.2 it/s ETA 00:23 status" (exposed for tests).
  std::string line() const;
  static std::string format_duration(double seconds);  // 00:23, 12:05, 1:02:03

 private:
  std::string label_, status_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool tty_;
};

}  // namespace kvsqueeze::eval
