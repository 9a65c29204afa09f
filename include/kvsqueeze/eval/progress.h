#pragma once
// A progress bar with rate and ETA on stderr: redrawn in place on a terminal, otherwise a plain
// line at most every few seconds (logs stay readable).
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace kvsqueeze::eval {

class Progress {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  Progress(std::string label, int64_t total);
  // For tests: a fake clock, another stream, and whether it counts as a terminal.
  Progress(std::string label, int64_t total, Clock now, std::ostream& out, bool tty);
  ~Progress();  // finishes the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  void advance(int64_t n = 1, const std::string& status = "");
  // "[label] 12/40 30% 1.2 it/s ETA 00:23 status" (exposed for tests). Below 1 it/s the rate
  // reads "4.0 s/it"; once done, "ETA .." becomes "in 00:33" (the elapsed time).
  std::string line() const;
  static std::string format_duration(double seconds);  // 00:23, 12:05, 1:02:03
  // Seconds between two lines when the output is not a terminal.
  static constexpr double kLogInterval = 5.0;

 private:
  void print(bool final_line);

  std::string label_, status_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool tty_;
  Clock now_;
  std::ostream* out_;
  bool printed_current_ = false;  // the latest state is already on screen / in the log
  bool printed_any_ = false;
};

}  // namespace kvsqueeze::eval
