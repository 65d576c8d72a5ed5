// PrivateContainerd: a containerd of its own, in a private temp dir, for
// testing and benchmarking runtimes (runc, our containerd-shim-vmfactory-v2)
// through it: the integration tests and `vmfactory bench --modes containers`.
//
//   VMF_ASSIGN_OR_RETURN(auto ctrd, PrivateContainerd::Start(VMF_DEFAULT_BIN_DIR, 30s));
//   VMF_RETURN_IF_ERROR(BuildBusyboxImage(ctrd->dir() + "/image.tar", kTestImageRef));
//   VMF_RETURN_IF_ERROR(ctrd->ImportImage(ctrd->dir() + "/image.tar"));
//   auto r = ctrd->Ctr(ctrd->RunArgs({"--rm", kTestImageRef, "c1", "true"}), 60s);
//
// The temp dir (0700, /tmp/vmf-ctrd-XXXXXX) holds everything containerd
// keeps: root/, state/, opt/, the CNI dirs, config.toml, containerd.log, the
// gRPC socket containerd.sock and the ttrpc socket containerd.sock.ttrpc;
// and what ctr and runc would otherwise put under /run/containerd: fifo/
// (ctr --fifo-dir) and runc/ (ctr --runc-root), which RunArgs() and
// ExecArgs() pass.
//
// What containerd 1.6 does outside it regardless (no setting changes it):
// containerd-shim-runc-v2 listens on /run/containerd/s/<sha256(address/ns/id)>
// (it creates /run/containerd/s, 0600, if missing), and runc makes the
// cgroup /<namespace>/<id> in every hierarchy. Stop() removes what of these
// its containers left (a killed shim leaves its socket and cgroups, and
// the /vmf-test parent outlives every container).
//
// Stop() (or the destructor) leaves nothing running: it deletes every task
// and container (so shims exit by themselves), stops containerd (SIGTERM,
// SIGKILL after 5 s), kills whatever is left that belongs to it (shims and
// their process trees: found in /proc by their command line, cwd or
// executable naming the temp dir), unmounts what is mounted under the temp
// dir, removes the shim sockets and cgroups its containers left, and
// removes the temp dir.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/scoped_dir.h"
#include "common/status.h"

namespace vmf::ctrd {

struct CtrResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out;
  std::string err;
  // "exit N, stdout: ..., stderr: ..." for assertion messages.
  std::string Describe() const;
};

// Runs argv (no shell) with stdin_data on its stdin (/dev/null when empty),
// collecting stdout and stderr apart (each bounded to max_output bytes; the
// rest is read and dropped). At the timeout the program is killed and the
// result is DEADLINE_EXCEEDED carrying what it had printed.
// stdin_eof_delay keeps stdin open that long after the data is written
// (see PrivateContainerd::Ctr).
Result<CtrResult> RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                             const std::string& stdin_data = "",
                             std::chrono::milliseconds stdin_eof_delay = std::chrono::milliseconds(0),
                             size_t max_output = 4 << 20);

class PrivateContainerd {
 public:
  // The containerd namespace that Ctr() uses.
  static constexpr char kNamespace[] = "vmf-test";
  // The runtime name of our shim as config.toml registers it for CRI.
  static constexpr char kVmfactoryRuntime[] = "io.containerd.vmfactory.v2";
  // The containerd namespace of the CRI plugin's images, pods and containers.
  static constexpr char kCriNamespace[] = "k8s.io";
  // The CRI plugin's sandbox (pause) image, as config.toml names it: a test
  // that makes pods imports an image of this name into kCriNamespace (say,
  // BuildBusyboxImage(tar, kSandboxImageRef, {"sleep", "1000000"})), since
  // containerd could not pull one.
  static constexpr char kSandboxImageRef[] = "docker.io/library/vmf-pause:test";

  // Starts containerd with PATH = extra_path_dir:$PATH (so that it finds a
  // shim binary there; empty: $PATH alone) and waits until it answers
  // `ctr version`. FAILED_PRECONDITION when not root or containerd/ctr are
  // not installed; an error carrying the tail of containerd's log when it
  // exits or does not answer within timeout.
  static Result<std::unique_ptr<PrivateContainerd>> Start(const std::string& extra_path_dir,
                                                          std::chrono::seconds timeout);

  ~PrivateContainerd();
  PrivateContainerd(const PrivateContainerd&) = delete;
  PrivateContainerd& operator=(const PrivateContainerd&) = delete;

  // Runs `ctr --address SOCK --namespace vmf-test ARGS...`, stdin_data on
  // its stdin (/dev/null when empty).
  //
  // ctr 1.6 turns EOF on its stdin into CloseIO (the shim then closes the
  // process's stdin) only once `run` has created the task or `tasks exec`
  // the process: an EOF before that is lost and a process that reads to
  // EOF (cat) never ends. stdin_eof_delay holds stdin open that long after
  // the data is written, so that the EOF comes late enough.
  Result<CtrResult> Ctr(const std::vector<std::string>& args, std::chrono::seconds timeout,
                        const std::string& stdin_data = "",
                        std::chrono::milliseconds stdin_eof_delay = std::chrono::milliseconds(0));
  // The argv Ctr() runs (for a ctr started some other way: under a pty, or
  // left running as `ctr events`).
  std::vector<std::string> CtrArgv(const std::vector<std::string>& args) const;
  // "run --fifo-dir DIR/fifo --runc-root DIR/runc" + args: `ctr run` that
  // keeps its FIFOs and runc's state in the temp dir. (--runc-root only
  // matters to the runc runtime; ctr ignores it for any other.)
  std::vector<std::string> RunArgs(const std::vector<std::string>& args) const;
  // "tasks exec --fifo-dir DIR/fifo" + args (then --exec-id ID CONTAINER CMD...).
  std::vector<std::string> ExecArgs(const std::vector<std::string>& args) const;
  // `ctr images import TAR` into the containerd namespace ns (the CRI
  // plugin's images are kCriNamespace's); an error with ctr's stderr if it
  // fails.
  Status ImportImage(const std::string& tar, const std::string& ns = kNamespace);

  const std::string& address() const { return address_; }  // gRPC socket
  const std::string& ttrpc_address() const { return ttrpc_address_; }
  const std::string& dir() const { return dir_.path(); }
  std::string config_path() const { return dir() + "/config.toml"; }
  std::string fifo_dir() const { return dir() + "/fifo"; }
  std::string runc_root() const { return dir() + "/runc"; }
  // The bundle dir containerd gives a task (the shim's cwd).
  std::string bundle_dir(const std::string& id) const;
  // Where containerd-shim-runc-v2 listens for the container `id` of
  // kNamespace: /run/containerd/s/<sha256 of "ADDRESS/vmf-test/ID">.
  std::string runc_shim_socket(const std::string& id) const;
  pid_t pid() const { return containerd_.pid(); }
  bool running() { return containerd_.Running(); }
  // The tail of containerd's log (stdout and stderr).
  std::string log() const;

  // Stops everything (see above). Idempotent; the destructor calls it.
  void Stop();

  // The config.toml this class writes for the given temp dir (exposed for
  // tests and the record).
  static std::string ConfigToml(const std::string& dir);

 private:
  PrivateContainerd() = default;
  Status WaitReady(std::chrono::seconds timeout);
  void DeleteContainers();
  void KillLeftovers();
  void UnmountAll();
  void CollectTasks();
  void RemoveShimSockets();
  void RemoveCgroups();

  ScopedDir dir_;
  std::string address_;
  std::string ttrpc_address_;
  std::string log_path_;
  ChildProcess containerd_;
  bool answered_ = false;  // containerd has answered `ctr version`
  // (namespace, container id) seen before stopping: their shim sockets.
  std::vector<std::pair<std::string, std::string>> containers_;
  std::vector<std::string> namespaces_;  // containerd namespaces seen before stopping
  // The cgroupsPath of each task's bundle (config.json).
  std::vector<std::string> cgroups_;
};

// Pids of processes whose argv[0]'s base name is `name` (any owner).
std::vector<pid_t> ProcessesNamed(const std::string& name);

}  // namespace vmf::ctrd
