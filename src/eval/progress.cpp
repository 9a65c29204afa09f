#include "kvsqueeze/eval/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

namespace kvsqueeze::eval {

Progress::Progress(std::string label, int64_t total)
    : Progress(std::move(label), total, [] { return std::chrono::steady_clock::now(); }, std::cerr,
               ::isatty(STDERR_FILENO) == 1) {}

Progress::Progress(std::string label, int64_t total, Clock now, std::ostream& out, bool tty)
    : label_(std::move(label)), total_(total), tty_(tty), now_(std::move(now)), out_(&out) {
  start_ = last_print_ = now_();
}

Progress::~Progress() {
  try {
    if (!printed_current_ && done_ > 0) print(true);
    else if (tty_ && printed_any_) *out_ << '\n' << std::flush;
  } catch (...) {  // never throw from a destructor (the stream may be gone at exit)
  }
}

void Progress::advance(int64_t n, const std::string& status) {
  done_ += n;
  if (!status.empty()) status_ = status;
  printed_current_ = false;
  const bool finished = total_ > 0 && done_ >= total_;
  const double since_print = std::chrono::duration<double>(now_() - last_print_).count();
  if (tty_ || finished || since_print >= kLogInterval) print(false);
}

void Progress::print(bool final_line) {
  last_print_ = now_();
  if (tty_) {
    // \r and "erase to end of line": a shorter line leaves no tail of the previous one.
    *out_ << '\r' << line() << "\033[K";
    if (final_line) *out_ << '\n';
  } else {
    *out_ << line() << '\n';
  }
  *out_ << std::flush;
  printed_current_ = true;
  printed_any_ = true;
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long long total = std::llround(seconds);
  const long long hours = total / 3600, minutes = total / 60 % 60, secs = total % 60;
  char buffer[48];
  if (hours > 0) std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", hours, minutes, secs);
  else std::snprintf(buffer, sizeof buffer, "%02lld:%02lld", minutes, secs);
  return buffer;
}

std::string Progress::line() const {
  const double elapsed = std::chrono::duration<double>(now_() - start_).count();
  std::string text = "[" + label_ + "] " + std::to_string(done_);
  if (total_ > 0) {
    const int64_t percent = done_ >= total_ ? 100 : done_ * 100 / total_;
    text += "/" + std::to_string(total_) + " " + std::to_string(percent) + "%";
  }
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  char buffer[64];
  if (done_ <= 0 || rate <= 0) std::snprintf(buffer, sizeof buffer, " -- it/s");
  else if (rate >= 1) std::snprintf(buffer, sizeof buffer, " %.1f it/s", rate);
  else std::snprintf(buffer, sizeof buffer, " %.1f s/it", 1.0 / rate);
  text += buffer;
  if (total_ > 0 && done_ >= total_) text += " in " + format_duration(elapsed);
  else if (total_ > 0) text += " ETA " + (rate > 0 ? format_duration((total_ - done_) / rate) : std::string("--:--"));
  if (!status_.empty()) text += " " + status_;
  return text;
}

}  // namespace kvsqueeze::eval
