// The guest agent's reading of the kernel command line (agent/init.h).
#include <gtest/gtest.h>

#include "init.h"

namespace vmf::agent {
namespace {

TEST(CmdlineTest, FindsTheValueOfAKeyAmongTheWords) {
  const std::string cmdline = "console=ttyS0 quiet vmf.hostile=garbage\tvmf.port=agent.1\n";
  EXPECT_EQ(CmdlineValue(cmdline, "vmf.hostile"), "garbage");
  EXPECT_EQ(CmdlineValue(cmdline, "vmf.port"), "agent.1");
  EXPECT_EQ(CmdlineValue(cmdline, "console"), "ttyS0");
}

TEST(CmdlineTest, NoValueForAbsentPrefixedOrBareKeys) {
  EXPECT_EQ(CmdlineValue("", "vmf.port"), "");
  EXPECT_EQ(CmdlineValue("   \n", "vmf.port"), "");
  EXPECT_EQ(CmdlineValue("quiet vmf.port", "vmf.port"), "");
  EXPECT_EQ(CmdlineValue("vmf.port=", "vmf.port"), "");
  EXPECT_EQ(CmdlineValue("xvmf.port=a vmf.portx=b", "vmf.port"), "");
}

TEST(CmdlineTest, TheLastWordWinsAsTheKernelDoes) {
  EXPECT_EQ(CmdlineValue("vmf.port=a vmf.port=b", "vmf.port"), "b");
}

TEST(CmdlineTest, PortNameFallsBackToTheDefault) {
  EXPECT_EQ(PortNameFromCmdline("quiet"), std::string(kDefaultPortName));
  EXPECT_EQ(PortNameFromCmdline("quiet vmf.port="), std::string(kDefaultPortName));
  EXPECT_EQ(PortNameFromCmdline("vmf.port=p9", "x"), "p9");
}

}  // namespace
}  // namespace vmf::agent
