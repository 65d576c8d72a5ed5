// The agent's process table (agent/process_table.h) on its own: bounded
// buffers, deferred reads and waits and when they are answered, stdin
// flushing, and forgetting processes. Real processes, driven by a small
// poll() loop like the agent's.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "log.h"
#include "process_table.h"
#include "spawn.h"

namespace vmf::agent {
namespace {

using std::chrono::milliseconds;
using Stream = ProcessTable::Stream;

class ProcessTableTest : public ::testing::Test {
 protected:
  // Like ChannelServer: a write to a dead process's stdin must fail with
  // EPIPE, not kill the test.
  void SetUp() override {
    SetLogEnabled(false);
    old_sigpipe_ = ::signal(SIGPIPE, SIG_IGN);
  }
  void TearDown() override {
    ::signal(SIGPIPE, old_sigpipe_);
    SetLogEnabled(true);
  }
  sighandler_t old_sigpipe_ = SIG_DFL;

  // Answers recorded in arrival order.
  std::vector<std::pair<uint32_t, std::string>> reads_;
  std::vector<std::pair<uint32_t, int>> waits_;
  std::vector<std::pair<uint32_t, Status>> failures_;

  std::unique_ptr<ProcessTable> MakeTable(ProcessTable::Limits limits = ProcessTable::Limits()) {
    ProcessTable::Answers a;
    a.read = [this](uint32_t id, std::string data) { reads_.emplace_back(id, std::move(data)); };
    a.wait = [this](uint32_t id, int status) { waits_.emplace_back(id, status); };
    a.failed = [this](uint32_t id, const Status& st) { failures_.emplace_back(id, st); };
    return std::make_unique<ProcessTable>(std::move(a), limits);
  }

  // Starts args as ("c1", eid); returns the pid (the spawned fds in *out_fd).
  pid_t Start(ProcessTable* t, const std::string& eid, const std::vector<std::string>& args,
              int* out_fd = nullptr) {
    grpc::Process p;
    for (auto& a : args) p.add_args(a);
    EXPECT_TRUE(t->CheckNew("c1", eid).ok());
    EXPECT_TRUE(t->CheckRoom().ok());
    Result<Spawned> s = Spawn(p);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok()) return -1;
    pid_t pid = s->pid;
    if (out_fd != nullptr) *out_fd = s->out.get();
    t->Add("c1", eid, std::move(*s));
    return pid;
  }

  // One agent loop iteration.
  static void Step(ProcessTable* t, int wait_ms) {
    std::vector<pollfd> fds;
    t->AddPollFds(&fds);
    ::poll(fds.data(), fds.size(), wait_ms);
    t->HandlePollFds(fds.data(), fds.size());
    t->ReapChildren();
    t->CollectGarbage();
  }
  static bool DriveUntil(ProcessTable* t, const std::function<bool()>& done,
                         milliseconds timeout = milliseconds(3000)) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      Step(t, 5);
    }
    return true;
  }
  static void Drive(ProcessTable* t, milliseconds d) {
    auto end = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < end) Step(t, 5);
  }

  // Reads a stream to EOF through the table, one request id per read.
  std::string ReadAll(ProcessTable* t, const std::string& eid, Stream s, uint32_t* next_id,
                      size_t max_chunk) {
    std::string all;
    while (true) {
      uint32_t id = (*next_id += 2);
      size_t before = reads_.size();
      EXPECT_TRUE(t->Read(id, "c1", eid, s, 0).ok());
      if (!DriveUntil(t, [&] { return reads_.size() > before; })) {
        ADD_FAILURE() << "read " << id << " never answered";
        return all;
      }
      EXPECT_EQ(reads_.back().first, id);
      EXPECT_LE(reads_.back().second.size(), max_chunk);
      if (reads_.back().second.empty()) return all;
      all += reads_.back().second;
    }
  }
};

TEST_F(ProcessTableTest, OutputBufferIsBoundedAndThePipeLeftAloneWhenFull) {
  ProcessTable::Limits lim;
  lim.max_output_buffer = 4096;
  auto t = MakeTable(lim);
  int out_fd = -1;
  Start(t.get(), "big", {"head", "-c", "100000", "/dev/zero"}, &out_fd);
  // Once the 4 KiB buffer is full, stdout is no longer polled (head blocks
  // on the pipe); a loaded machine may take a while to get there.
  auto stdout_polled = [&] {
    std::vector<pollfd> fds;
    t->AddPollFds(&fds);
    return std::any_of(fds.begin(), fds.end(), [&](const pollfd& p) { return p.fd == out_fd; });
  };
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return !stdout_polled(); }))
      << "a full stdout buffer is still polled";
  Drive(t.get(), milliseconds(20));
  EXPECT_FALSE(stdout_polled()) << "a full stdout buffer is polled again";

  EXPECT_TRUE(t->Read(1, "c1", "big", Stream::kStdout, 10).ok());  // len caps the answer
  ASSERT_EQ(reads_.size(), 1u);
  EXPECT_EQ(reads_[0].second, std::string(10, '\0'));
  EXPECT_TRUE(t->Read(3, "c1", "big", Stream::kStdout, 1u << 30).ok());  // so does the buffer size
  ASSERT_EQ(reads_.size(), 2u);
  EXPECT_EQ(reads_[1].second.size(), 4096u);

  uint32_t id = 3;
  std::string rest = ReadAll(t.get(), "big", Stream::kStdout, &id, 4096);
  EXPECT_EQ(10 + 4096 + rest.size(), 100000u);
  EXPECT_EQ(ReadAll(t.get(), "big", Stream::kStderr, &id, 4096), "");
}

TEST_F(ProcessTableTest, DeferredReadsAnsweredInOrderWhenOutputArrives) {
  auto t = MakeTable();
  Start(t.get(), "r", {"sh", "-c", "read x; echo got $x"});
  ASSERT_TRUE(t->Read(1, "c1", "r", Stream::kStdout, 0).ok());
  ASSERT_TRUE(t->Read(3, "c1", "r", Stream::kStdout, 0).ok());
  Drive(t.get(), milliseconds(50));
  EXPECT_TRUE(reads_.empty());
  EXPECT_EQ(t->deferred_count(), 2u);

  Result<size_t> n = t->WriteStdin("c1", "r", "hi\n");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return reads_.size() == 2; }));
  EXPECT_EQ(reads_[0], std::make_pair(1u, std::string("got hi\n")));  // the first waiter gets the data
  EXPECT_EQ(reads_[1], std::make_pair(3u, std::string()));            // the second the EOF
  EXPECT_EQ(t->deferred_count(), 0u);
}

TEST_F(ProcessTableTest, EveryWaiterAnsweredAtTheExitAndLaterWaitsAtOnce) {
  auto t = MakeTable();
  Start(t.get(), "w", {"sh", "-c", "sleep 0.1; exit 7"});
  ASSERT_TRUE(t->Wait(1, "c1", "w").ok());
  ASSERT_TRUE(t->Wait(3, "c1", "w").ok());
  EXPECT_TRUE(waits_.empty());
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return waits_.size() == 2; }));
  EXPECT_EQ(waits_[0], std::make_pair(1u, 7));
  EXPECT_EQ(waits_[1], std::make_pair(3u, 7));
  // Outputs not yet read to EOF: the process is kept, and a late wait is answered at once.
  EXPECT_EQ(t->size(), 1u);
  ASSERT_TRUE(t->Wait(5, "c1", "w").ok());
  ASSERT_EQ(waits_.size(), 3u);
  EXPECT_EQ(waits_[2], std::make_pair(5u, 7));
}

TEST_F(ProcessTableTest, ForgottenOnceWaitedAndReadToEof) {
  auto t = MakeTable();
  Start(t.get(), "f", {"true"});
  ASSERT_TRUE(t->Wait(1, "c1", "f").ok());
  uint32_t id = 1;
  ReadAll(t.get(), "f", Stream::kStdout, &id, 1u << 20);
  ReadAll(t.get(), "f", Stream::kStderr, &id, 1u << 20);
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return t->size() == 0; }));
  EXPECT_EQ(waits_.size(), 1u);
  EXPECT_TRUE(t->CheckNew("c1", "f").ok());  // the id is free again
  EXPECT_EQ(t->Wait(9, "c1", "f").code(), Code::kNotFound);
}

TEST_F(ProcessTableTest, ForgetGraceAbortsReadsStillWaiting) {
  ProcessTable::Limits lim;
  lim.forget_grace = milliseconds(0);
  auto t = MakeTable(lim);
  // The shell exits at once, but the background sleep keeps stdout open: no EOF.
  pid_t pid = Start(t.get(), "g", {"sh", "-c", "sleep 5 & exit 0"});
  ASSERT_TRUE(t->Read(1, "c1", "g", Stream::kStdout, 0).ok());
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return t->size() == 0; }));
  ::kill(-pid, SIGKILL);  // the orphaned sleep, in the same process group
  ASSERT_EQ(failures_.size(), 1u);
  EXPECT_EQ(failures_[0].first, 1u);
  EXPECT_EQ(failures_[0].second.code(), Code::kAborted);
  EXPECT_TRUE(reads_.empty());
}

TEST_F(ProcessTableTest, DropDeferredForgetsWaitersButKeepsOutput) {
  auto t = MakeTable();
  Start(t.get(), "d", {"sh", "-c", "sleep 0.1; echo late"});
  ASSERT_TRUE(t->Read(1, "c1", "d", Stream::kStdout, 0).ok());
  ASSERT_TRUE(t->Wait(3, "c1", "d").ok());
  EXPECT_EQ(t->deferred_count(), 2u);
  t->DropDeferred();
  EXPECT_EQ(t->deferred_count(), 0u);
  Drive(t.get(), milliseconds(300));
  EXPECT_TRUE(reads_.empty());
  EXPECT_TRUE(waits_.empty());
  ASSERT_TRUE(t->Read(5, "c1", "d", Stream::kStdout, 0).ok());  // buffered meanwhile
  ASSERT_EQ(reads_.size(), 1u);
  EXPECT_EQ(reads_[0], std::make_pair(5u, std::string("late\n")));
}

TEST_F(ProcessTableTest, StdinBufferIsBoundedWhenNobodyReads) {
  ProcessTable::Limits lim;
  lim.max_stdin_buffer = 1000;
  auto t = MakeTable(lim);
  Start(t.get(), "s", {"sleep", "5"});
  std::string data(1u << 20, 'x');
  Result<size_t> n = t->WriteStdin("c1", "s", data);
  ASSERT_TRUE(n.ok());
  EXPECT_GE(*n, 1000u);  // the pipe took some, the buffer 1000 more
  EXPECT_LT(*n, data.size());
  n = t->WriteStdin("c1", "s", data);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);  // full: nothing accepted, not an error
  ASSERT_TRUE(t->CloseStdin("c1", "s").ok());
  EXPECT_EQ(t->WriteStdin("c1", "s", "x").status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE(t->Signal("c1", "s", SIGKILL).ok());
  ASSERT_TRUE(t->Wait(1, "c1", "s").ok());
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return waits_.size() == 1; }));
  EXPECT_EQ(waits_[0].second, 128 + SIGKILL);
}

TEST_F(ProcessTableTest, BufferedStdinIsFlushedThroughPollThenClosed) {
  auto t = MakeTable();
  Start(t.get(), "wc", {"wc", "-c"});
  std::string data(300000, 'y');  // more than a pipe holds: the rest waits in the buffer
  Result<size_t> n = t->WriteStdin("c1", "wc", data);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, data.size());
  ASSERT_TRUE(t->CloseStdin("c1", "wc").ok());  // closes once the buffer is written
  uint32_t id = 1;
  std::string out = ReadAll(t.get(), "wc", Stream::kStdout, &id, 1u << 20);
  EXPECT_EQ(out, "300000\n");
}

TEST_F(ProcessTableTest, LimitsAndUnknownProcesses) {
  ProcessTable::Limits lim;
  lim.max_processes = 1;
  auto t = MakeTable(lim);
  Start(t.get(), "one", {"sleep", "5"});
  EXPECT_EQ(t->CheckNew("c1", "one").code(), Code::kAlreadyExists);
  EXPECT_TRUE(t->CheckNew("c2", "one").ok());
  EXPECT_EQ(t->CheckRoom().code(), Code::kResourceExhausted);
  EXPECT_EQ(t->Signal("c1", "one", 65).code(), Code::kInvalidArgument);
  EXPECT_TRUE(t->Signal("c1", "one", 0).ok());

  EXPECT_EQ(t->Read(1, "c1", "nope", Stream::kStdout, 0).code(), Code::kNotFound);
  EXPECT_EQ(t->Wait(3, "c1", "nope").code(), Code::kNotFound);
  EXPECT_EQ(t->Signal("c1", "nope", 15).code(), Code::kNotFound);
  EXPECT_EQ(t->WriteStdin("c1", "nope", "x").status().code(), Code::kNotFound);
  EXPECT_EQ(t->CloseStdin("c1", "nope").code(), Code::kNotFound);
  EXPECT_EQ(t->deferred_count(), 0u);
  EXPECT_TRUE(reads_.empty() && waits_.empty() && failures_.empty());
}

TEST_F(ProcessTableTest, DestructorKillsAndReapsRunningProcesses) {
  auto t = MakeTable();
  pid_t pid = Start(t.get(), "long", {"sleep", "30"});
  ASSERT_GT(pid, 0);
  auto start = std::chrono::steady_clock::now();
  t.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(2000));
  EXPECT_NE(::kill(pid, 0), 0);  // gone and reaped: no zombie left behind
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(ProcessTableTest, StalePollRangeIsIgnored) {
  auto t = MakeTable();
  Start(t.get(), "a", {"sh", "-c", "sleep 0.05; echo a"});
  ASSERT_TRUE(t->Read(1, "c1", "a", Stream::kStdout, 0).ok());  // waits for the output
  size_t answered = reads_.size();
  std::vector<pollfd> fds;
  t->AddPollFds(&fds);
  Start(t.get(), "b", {"true"});  // the table changed after AddPollFds
  ::poll(fds.data(), fds.size(), 1000);
  t->HandlePollFds(fds.data(), fds.size());  // must not touch the old refs
  EXPECT_EQ(reads_.size(), answered);
  ASSERT_TRUE(DriveUntil(t.get(), [&] { return reads_.size() == 1; }));  // a fresh range serves it
  EXPECT_EQ(reads_[0], std::make_pair(1u, std::string("a\n")));
}

}  // namespace
}  // namespace vmf::agent
