// Running commands in a real VM through the agent: exit codes, streams, stdin.
#include <gtest/gtest.h>

#include "helpers.h"

namespace vmf::testing {
namespace {

class ExecTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto vm = VM::Create(TestConfig());
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    vm_ = std::move(vm).value().release();
  }
  static void TearDownTestSuite() {
    delete vm_;
    vm_ = nullptr;
    EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
    EXPECT_EQ(CountVmDirs(), 0);
  }
  void SetUp() override { ASSERT_NE(vm_, nullptr) << "the shared VM did not boot"; }
  static VM* vm_;
};
VM* ExecTest::vm_ = nullptr;

TEST_F(ExecTest, ExitCodeAndSeparateStreams) {
  auto r = Exec(*vm_, {"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");

  auto t = Exec(*vm_, {"true"});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->exit_code, 0);
  auto killed = Exec(*vm_, {"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(killed.ok());
  EXPECT_EQ(killed->exit_code, 128 + 9);
}

TEST_F(ExecTest, StdinReachesTheCommand) {
  std::string input;
  for (int i = 0; i < 20000; ++i) input += "line " + std::to_string(i) + "\n";
  auto r = Exec(*vm_, {"cat"}, input);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->out, input);
  auto wc = Exec(*vm_, {"wc", "-l"}, "a\nb\nc\n");
  ASSERT_TRUE(wc.ok());
  EXPECT_NE(wc->out.find('3'), std::string::npos) << wc->out;
}

TEST_F(ExecTest, MoreThanOneMiBOfOutputArrivesIntact) {
  // 3 MiB of a known pattern on stdout and 1.5 MiB on stderr, concurrently.
  auto r = Exec(*vm_, {"sh", "-c", "yes 0123456789abcdef | head -c 3145728; yes ERR | head -c 1572864 >&2"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  ASSERT_EQ(r->out.size(), 3145728u);
  ASSERT_EQ(r->err.size(), 1572864u);
  const std::string unit = "0123456789abcdef\n";
  for (size_t i = 0; i < r->out.size(); ++i) {
    ASSERT_EQ(r->out[i], unit[i % unit.size()]) << "at byte " << i;
  }
  for (size_t i = 0; i < r->err.size(); ++i) ASSERT_EQ(r->err[i], "ERR\n"[i % 4]) << "at byte " << i;
}

TEST_F(ExecTest, MissingCommandIsNotFound) {
  ExecSpec spec;
  spec.exec_id = "missing";
  spec.args = {"/no/such/command"};
  Status st = vm_->agent().ExecProcess(spec);
  EXPECT_EQ(st.code(), Code::kNotFound) << st.ToString();
  // The agent keeps serving.
  auto r = Exec(*vm_, {"echo", "still here"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "still here\n");
}

TEST_F(ExecTest, GuestDetailsAndVersion) {
  auto v = vm_->agent().Version();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, VMF_VERSION);
  auto d = vm_->agent().GetGuestDetails();
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_GT(d->mem_block_size_bytes(), 0u);
  EXPECT_TRUE(d->agent_details().init_daemon());
}

}  // namespace
}  // namespace vmf::testing
