#include "shim/stdio.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "common/io.h"

namespace vmf::shim {
namespace {

Deadline Forever() { return Deadline(std::chrono::hours(24 * 365)); }

// An output path: a FIFO or file path, or file://PATH (appended to).
Result<UniqueFd> OpenOutput(const std::string& path) {
  if (path.empty()) return UniqueFd();
  if (path.rfind("file://", 0) == 0) {
    std::string p = path.substr(7);
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return ErrnoStatus(errno, "open " + p);
    return fd;
  }
  if (path.find("://") != std::string::npos) {
    return InvalidArgument("stdio " + path + ": only FIFOs, files and file:// URIs are supported");
  }
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  return fd;
}

}  // namespace

Result<std::unique_ptr<ProcessIo>> ProcessIo::Open(const StdioPaths& paths) {
  std::unique_ptr<ProcessIo> io(new ProcessIo());
  io->paths_ = paths;
  if (!paths.in.empty()) {
    if (paths.in.find("://") != std::string::npos)
      return InvalidArgument("stdin " + paths.in + ": not a FIFO");
    io->in_.reset(::open(paths.in.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!io->in_) return ErrnoStatus(errno, "open " + paths.in);
  }
  VMF_ASSIGN_OR_RETURN(io->out_, OpenOutput(paths.out));
  if (!paths.terminal) {
    VMF_ASSIGN_OR_RETURN(io->err_, OpenOutput(paths.err));
  }
  return io;
}

ProcessIo::~ProcessIo() { Stop(); }

void ProcessIo::Start(AgentClient* agent, const ProcId& proc) {
  agent_ = agent;
  proc_ = std::make_unique<ProcId>(proc);
  out_thread_ = std::thread([this] { PumpOut(false); });
  if (!paths_.terminal) err_thread_ = std::thread([this] { PumpOut(true); });
  if (in_) {
    in_thread_ = std::thread([this] { PumpIn(); });
  } else {
    (void)agent_->CloseStdin(*proc_);  // nothing will come: EOF at once
  }
}

void ProcessIo::PumpOut(bool err) {
  const int fd = err ? err_.get() : out_.get();
  while (!stop_) {
    auto data = err ? agent_->ReadStderr(*proc_, Forever()) : agent_->ReadStdout(*proc_, Forever());
    if (!data.ok() || data->empty()) return;
    // A reader that went away must not stop the process: drop the output.
    if (fd >= 0) (void)WriteAll(fd, *data, Deadline(std::chrono::seconds(30)));
  }
}

void ProcessIo::PumpIn() {
  char buf[65536];
  bool eof = false;
  while (!stop_ && !eof) {
    pollfd p{in_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, 50);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) {
      if (close_stdin_) break;  // nothing pending any more
      continue;
    }
    ssize_t n = ::read(in_.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      // No writer: EOF, unless the writer has not opened it yet; ctr opens
      // its end before it creates the task, so this is the end.
      eof = true;
      break;
    }
    std::string chunk(buf, static_cast<size_t>(n));
    while (!chunk.empty() && !stop_) {
      auto wrote = agent_->WriteStdin(*proc_, chunk);
      if (!wrote.ok()) return;
      chunk.erase(0, *wrote);
      if (!chunk.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (!stop_) (void)agent_->CloseStdin(*proc_);
}

void ProcessIo::WaitOutput() {
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
  out_.reset();
  err_.reset();
}

void ProcessIo::Stop() {
  stop_ = true;
  if (in_thread_.joinable()) in_thread_.join();
  // Output pumps end when the agent answers EOF or the VM's channel closes.
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
  out_.reset();
  err_.reset();
  in_.reset();
}

}  // namespace vmf::shim
