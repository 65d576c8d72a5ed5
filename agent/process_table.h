// ProcessTable: the processes the agent started, keyed by (container id,
// exec id): their pipes and buffered I/O, the requests waiting on them
// (reads before output, waits before the exit), their exit status, and when
// to forget them. Single-threaded, driven from the agent's poll() loop:
//
//   ProcessTable table(answers, ProcessTable::Limits());
//   table.Add("c1", "e1", std::move(spawned));      // after CheckNew/CheckRoom
//   table.Read(5, "c1", "e1", ProcessTable::Stream::kStdout, 0);  // maybe deferred
//   loop: table.AddPollFds(&fds); poll(...); table.HandlePollFds(...);
//         table.ReapChildren(); table.CollectGarbage();
//
// Reads and waits are answered through Answers, at once when they can be and
// later otherwise; every other call answers by its return value.
// The caller ignores SIGPIPE (ChannelServer does), so that writing to the
// stdin of a process that is gone fails with EPIPE.
//
// Bounds (the host can ask for anything): at most Limits::max_processes
// processes; at most max_output_buffer bytes buffered per output stream per
// process (the pipe is not read while the buffer is full, so a chatty
// process blocks on its own pipe) and per read answer; at most
// max_stdin_buffer bytes of pending stdin per process (WriteStdin accepts
// less and says how much). An exited process is forgotten once it was waited
// for and both outputs were read to EOF, or forget_grace after its exit
// whatever the host did; requests still waiting on it then fail (ABORTED).
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/status.h"
#include "spawn.h"

namespace vmf::agent {

class ProcessTable {
 public:
  using Clock = std::chrono::steady_clock;

  struct Limits {
    size_t max_processes = 256;
    size_t max_output_buffer = 1u << 20;  // per stream per process; also max read size
    size_t max_stdin_buffer = 1u << 20;
    // An exited process whose outputs were not all read to EOF, or that was
    // never waited for, is forgotten this long after its exit.
    std::chrono::milliseconds forget_grace{std::chrono::minutes(5)};
    // Reap every child (PID 1: orphans are re-parented to us), not only ours.
    bool reap_all_children = false;
  };

  // How reads and waits are answered; id is the caller's request id.
  struct Answers {
    std::function<void(uint32_t id, std::string data)> read;  // empty data: EOF
    std::function<void(uint32_t id, int exit_status)> wait;   // 128+N: killed by signal N
    std::function<void(uint32_t id, const Status& status)> failed;
  };

  enum class Stream { kStdout, kStderr };

  ProcessTable(Answers answers, Limits limits);
  // Kills (SIGKILL, whole process group) and reaps every process still running.
  ~ProcessTable();
  ProcessTable(const ProcessTable&) = delete;
  ProcessTable& operator=(const ProcessTable&) = delete;

  // ALREADY_EXISTS if (cid, eid) is taken.
  Status CheckNew(const std::string& cid, const std::string& eid) const;
  // RESOURCE_EXHAUSTED if the table holds max_processes processes.
  Status CheckRoom() const;
  // Takes over a started process. Precondition: CheckNew and CheckRoom are OK.
  // Without an err fd (a terminal) its stderr is at EOF from the start.
  void Add(const std::string& cid, const std::string& eid, Spawned process);

  // Queues a read of at most len bytes (0: max_output_buffer) of a stream;
  // answered at once if output or EOF is there, else when it arrives.
  // NOT_FOUND for an unknown process (nothing is queued).
  Status Read(uint32_t id, const std::string& cid, const std::string& eid, Stream stream, uint32_t len);
  // Queues a wait for the exit; answered at once if the process exited.
  Status Wait(uint32_t id, const std::string& cid, const std::string& eid);
  // Signals the process's group (signal 0 only checks it exists).
  Status Signal(const std::string& cid, const std::string& eid, uint32_t signal);
  // Writes what the pipe takes now and buffers what fits; returns the bytes
  // accepted (possibly 0). FAILED_PRECONDITION once stdin is closed.
  Result<size_t> WriteStdin(const std::string& cid, const std::string& eid, std::string_view data);
  // Closes stdin once the pending bytes are written.
  Status CloseStdin(const std::string& cid, const std::string& eid);
  // Sets the window size of a process's terminal (FAILED_PRECONDITION
  // without one).
  Status ResizeTerminal(const std::string& cid, const std::string& eid, uint32_t rows, uint32_t cols);

  // Whether (cid, eid) is a process that has not exited (not reaped yet: its
  // pid is still its own).
  bool Running(const std::string& cid, const std::string& eid) const;
  // Signals every process of container cid that has not exited (each one's
  // group); how many were signalled.
  size_t SignalContainer(const std::string& cid, int signal);
  // Kills (SIGKILL, each one's group) every process of container cid, reaps
  // them (waiting up to timeout), answers their waiters (waits with the
  // status, reads with what was left, then EOF) and forgets them.
  // DEADLINE_EXCEEDED if some did not die in time (those are kept).
  Status RemoveContainer(const std::string& cid, std::chrono::milliseconds timeout);

  // Forgets every queued read and wait (they are never answered).
  void DropDeferred();
  size_t deferred_count() const;
  size_t size() const { return procs_.size(); }

  // poll() integration: AddPollFds appends the pipe fds to watch; after
  // poll(), HandlePollFds gets exactly that range back (same order). A range
  // from before the table changed is ignored.
  void AddPollFds(std::vector<pollfd>* fds);
  void HandlePollFds(const pollfd* fds, size_t count);
  // Collects exited children (waitpid WNOHANG) and answers their waiters.
  void ReapChildren();
  // Forgets finished processes; call once per loop iteration.
  void CollectGarbage();

 private:
  struct OutStream {
    UniqueFd fd;
    std::string buf;
    bool eof = false;                                   // the pipe reached EOF (fd closed)
    bool eof_delivered = false;                         // an empty read (EOF) was answered
    std::deque<std::pair<uint32_t, uint32_t>> waiters;  // (request id, len)
  };
  struct Proc {
    std::string container_id, exec_id;
    pid_t pid = -1;
    UniqueFd stdin_fd;
    std::string stdin_buf;
    bool stdin_close_requested = false;
    bool stdin_broken = false;
    OutStream out, err;
    UniqueFd tty;  // the pty master, with a terminal
    bool exited = false;
    int exit_status = 0;
    Clock::time_point exit_time;
    bool wait_answered = false;
    std::vector<uint32_t> wait_waiters;
  };
  using Key = std::pair<std::string, std::string>;
  enum class PollKind { kStdin, kStdout, kStderr };
  struct PollRef {
    Proc* proc;
    PollKind kind;
    int fd;
  };

  Proc* Find(const std::string& cid, const std::string& eid);
  void FillOutput(OutStream* s);    // reads the pipe while room and data
  void ServeReaders(OutStream* s);  // answers waiters that can be answered
  std::string TakeOutput(OutStream* s, uint32_t len);
  void FlushStdin(Proc* p);
  void OnExit(Proc* p, int wstatus);

  Answers answers_;
  Limits limits_;
  std::map<Key, std::unique_ptr<Proc>> procs_;
  std::vector<PollRef> poll_refs_;
};

}  // namespace vmf::agent
