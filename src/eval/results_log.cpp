// results.jsonl: one JSON object per line, appended durably so that an interrupted run loses at
// most the line being written, and read back tolerating exactly that kind of damage.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "kvsqueeze/error.h"
#include "kvsqueeze/eval/report.h"

namespace kvsqueeze::eval {
namespace {

bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

bool is_json(const std::string& line) { return nlohmann::json::accept(line); }

// nullopt when `line` is not exactly one JSON object.
std::optional<nlohmann::json> parse_object(const std::string& line, std::string* why) {
  nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    if (why) *why = "not valid JSON";
    return std::nullopt;
  }
  if (!value.is_object()) {
    if (why) *why = std::string("a JSON ") + value.type_name() + ", not an object";
    return std::nullopt;
  }
  return value;
}

std::string system_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

void write_all(int fd, const std::string& bytes, const std::string& path) {
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(system_error("cannot write results file", path));
    written += static_cast<size_t>(n);
  }
}

// A file that does not end in '\n' was cut mid-line by an interrupted append. Before appending,
// drop that partial line (so it does not glue onto the new one and become a malformed middle line),
// or, if it is a complete object someone saved without a newline, just end it.
void repair_unterminated_tail(int fd, const std::string& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) throw Error(system_error("cannot stat results file", path));
  const off_t size = info.st_size;
  if (size == 0) return;
  char last = 0;
  if (::pread(fd, &last, 1, size - 1) != 1) throw Error(system_error("cannot read results file", path));
  if (last == '\n') return;
  // Find the start of the last line, reading backwards in blocks.
  off_t line_start = 0;
  constexpr off_t block = 4096;
  std::string buffer;
  for (off_t end = size; end > 0;) {
    const off_t begin = end > block ? end - block : 0;
    buffer.resize(static_cast<size_t>(end - begin));
    if (::pread(fd, buffer.data(), buffer.size(), begin) != static_cast<ssize_t>(buffer.size()))
      throw Error(system_error("cannot read results file", path));
    size_t newline = buffer.rfind('\n');
    if (newline != std::string::npos) {
      line_start = begin + static_cast<off_t>(newline) + 1;
      break;
    }
    end = begin;
  }
  std::string tail(static_cast<size_t>(size - line_start), '\0');
  if (::pread(fd, tail.data(), tail.size(), line_start) != static_cast<ssize_t>(tail.size()))
    throw Error(system_error("cannot read results file", path));
  if (is_json(tail)) {  // complete: a wrong type is for read_results to report, not to delete
    if (::lseek(fd, 0, SEEK_END) < 0) throw Error(system_error("cannot seek in results file", path));
    write_all(fd, "\n", path);
  } else if (::ftruncate(fd, line_start) != 0) {
    throw Error(system_error("cannot truncate the partial last line of results file", path));
  }
}

}  // namespace

std::vector<nlohmann::json> read_results(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 && errno == ENOENT) return {};  // nothing run yet
    throw Error(system_error("cannot open results file", path));
  }
  std::stringstream whole;
  whole << in.rdbuf();
  const std::string text = whole.str();

  // Lines with their 1-based numbers; blank lines are skipped.
  struct Line {
    size_t number;
    std::string text;
  };
  std::vector<Line> lines;
  size_t number = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t newline = text.find('\n', pos);
    size_t end = newline == std::string::npos ? text.size() : newline;
    ++number;
    std::string line = text.substr(pos, end - pos);
    if (!is_blank(line)) lines.push_back({number, std::move(line)});
    pos = end + 1;
  }

  std::vector<nlohmann::json> results;
  results.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string why;
    auto value = parse_object(lines[i].text, &why);
    if (value) {
      results.push_back(std::move(*value));
    } else if (i + 1 == lines.size() && !is_json(lines[i].text)) {
      break;  // the last line was being written when the run stopped; that cell is simply redone
    } else {
      throw Error("results file " + path + ": line " + std::to_string(lines[i].number) + " is " + why +
                  "; every line must be one JSON object (fix or delete that line)");
    }
  }
  return results;
}

void append_result(const std::string& path, const nlohmann::json& result) {
  if (!result.is_object()) throw Error("append_result: a result must be a JSON object, got " + std::string(result.type_name()));
  // Model output may hold invalid UTF-8 (generation can stop inside a character): replace it
  // rather than lose the result.
  std::string line = result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(system_error("cannot open results file", path));
  try {
    repair_unterminated_tail(fd, path);
    if (::lseek(fd, 0, SEEK_END) < 0) throw Error(system_error("cannot seek in results file", path));
    write_all(fd, line, path);
    if (::fsync(fd) != 0) throw Error(system_error("cannot flush results file", path));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw Error(system_error("cannot close results file", path));
}

}  // namespace kvsqueeze::eval
