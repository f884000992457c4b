#include "train/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/check.h"
#include "core/file.h"
#include "train/checkpoint.h"

namespace fp8lm {
namespace fs = std::filesystem;

namespace {

// What a run leaves in its folder.
constexpr const char* kRunFiles[] = {"metrics.jsonl", "telemetry.jsonl", "summary.json",
                                     "config.toml", "checkpoints"};
constexpr const char* kLogFiles[] = {"metrics.jsonl", "telemetry.jsonl"};

bool holds_run(const fs::path& dir) {
  for (const char* f : kRunFiles)
    if (fs::exists(dir / f)) return true;
  return false;
}

// True when `checkpoint` (a checkpoint or run folder) lies inside run folder `dir`.
bool inside(const std::string& checkpoint, const fs::path& dir) {
  const std::string c = fs::weakly_canonical(checkpoint).string() + "/";
  const std::string d = fs::weakly_canonical(dir).string() + "/";
  return c.starts_with(d);
}

void write_all(int fd, const std::string& text, const std::string& path) {
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path, ": write failed: ", std::strerror(w < 0 ? errno : EIO));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

RunFolder::RunFolder(const std::string& dir, const std::string& resume_checkpoint, bool overwrite)
    : dir_(dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir))
    fail("train.out_dir = '", dir, "': cannot create the run folder",
         ec ? ": " + ec.message() : std::string(" (a file is in the way)"));
  const std::string lock = dir + "/.lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) fail(lock, ": cannot open: ", std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string owner = read_text_file(lock, 64);
    ::close(lock_fd_);
    lock_fd_ = -1;
    fail("train.out_dir = '", dir, "' is in use by another fp8lm run (pid ",
         owner.empty() ? "unknown" : owner, "); one folder takes one writer");
  }
  try {
    claim(resume_checkpoint, overwrite);
  } catch (...) {
    ::close(lock_fd_);  // a constructor that throws runs no destructor
    lock_fd_ = -1;
    throw;
  }
}

void RunFolder::claim(const std::string& resume_checkpoint, bool overwrite) {
  const std::string& dir = dir_;
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0)
    fail(dir, "/.lock: cannot write: ", std::strerror(errno));

  const bool continues = !resume_checkpoint.empty() && inside(resume_checkpoint, dir);
  if (!continues && holds_run(dir)) {
    if (!overwrite)
      fail("train.out_dir = '", dir, "' already holds a run",
           resume_checkpoint.empty() ? "; continue it with --resume " + dir : std::string(),
           ", or pass --overwrite to replace it, or choose another train.out_dir");
    replace_ = true;
  }
}

void RunFolder::begin() {
  if (replace_)
    for (const char* f : kRunFiles) fs::remove_all(fs::path(dir_) / f);
  replace_ = false;
  remove_stale_checkpoint_temps(dir_);
  // Temporary files of atomic writes a kill interrupted (metrics.jsonl.tmp.PID.N, ...).
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.is_regular_file() && e.path().filename().string().find(".tmp.") != std::string::npos)
      fs::remove(e.path());
}

RunFolder::~RunFolder() {
  for (int fd : log_fd_)
    if (fd >= 0) ::close(fd);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void RunFolder::truncate_metrics(int64_t step) {
  for (const char* name : kLogFiles) {
    const std::string path = dir_ + "/" + name;
    if (!fs::exists(path)) continue;
    std::istringstream in(read_text_file(path));
    std::string kept, line;
    while (std::getline(in, line)) {
      try {
        if (nlohmann::json::parse(line).at("step").get<int64_t>() <= step) kept += line + "\n";
      } catch (const std::exception&) {
        // A line cut short by a kill: dropped.
      }
    }
    write_text_atomic(path, kept);
  }
}

void RunFolder::append(Log log, const nlohmann::json& line) {
  const std::string path = dir_ + "/" + kLogFiles[log];
  int& fd = log_fd_[log];
  if (fd < 0) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  }
  write_all(fd, line.dump() + "\n", path);
}

}  // namespace fp8lm
