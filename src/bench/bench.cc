#include "bench/bench.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent.pb.h"
#include "bench/containers.h"
#include "bench/end_to_end.h"
#include "bench/percentile.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"
#include "common/procfs.h"
#include "common/scoped.h"
#include "common/scoped_dir.h"
#include "factory/cache.h"
#include "factory/factory.h"
#include "factory/template.h"
#include "health.pb.h"
#include "hypervisor/qemu/qemu_hypervisor.h"
#include "hypervisor/qemu/qmp_client.h"
#include "ttrpc.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"
#include "ttrpc/sync.h"
#include "vm/vm.h"

namespace vmf {
namespace {

using nlohmann::json;

// Generous bounds for guest calls under TCG on a busy machine; they only
// keep a wedged guest from hanging the bench, they are not measured against.
constexpr Duration kGuestCallTimeout = std::chrono::seconds(60);
// The agent drops a half frame after 1 s of silence: re-send the sync (as the proxy does).
constexpr Duration kSyncRetry = std::chrono::milliseconds(1500);
// Each throughput worker gets this many VMs one after the other.
constexpr int kThroughputPerWorker = 2;

// The targets the report compares against (printed, never enforced).
constexpr double kTargetSpeedup = 10.0;              // template p50 at least 10x faster than cold
constexpr double kTargetMemoryRatio = 0.30;          // clone PSS at most 30% of cold
constexpr double kTargetCacheHitMs = 20.0;           // cache-hit p50 under 20 ms
constexpr double kTargetCloneFirstOutputMs = 120.0;  // a clone's GetVM until first output, p50
constexpr double kTargetIdleClonePssMib = 30.0;      // an idle clone of a 256 MiB guest
constexpr double kTargetWaitingTargetPssMib = 15.0;  // a restore target waiting for its state
constexpr double kTargetRunTemplateSpeedup = 15.0;   // `run -- true` from the template vs cold
constexpr double kTargetRunPoolSpeedup = 40.0;       // `run -- true` from the pool vs cold

// template-unconfined: clones as `template`, without the jail, uid,
// seccomp and cgroup, so that the report shows what confinement costs.
// daemon-load: not a source of its own but the bench's daemon under 1, 2
// and 4 clients at once (MeasureDaemonLoad).
// containers: `ctr run --rm IMAGE ID /bin/true` on a private containerd,
// runc against the shim from the pool, a clone and a cold boot
// (MeasureContainers), and a pod's memory.
enum class Mode {
  kCold,
  kTemplate,
  kCache,
  kQemuCold,
  kQemuLoadvm,
  kTemplateUnconfined,
  kDaemonLoad,
  kContainers,
  kRestore
};
constexpr const char* kKnownModes =
    "cold, template, restore, cache, qemu-cold, qemu-loadvm, template-unconfined, daemon-load, containers";
// A pool-backed `ctr run` within this factor of runc's (printed, not enforced).
constexpr double kTargetCtrPoolVsRunc = 2.0;
constexpr double kTargetShimRssMib = 15.0;

const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kCold:
      return "cold";
    case Mode::kTemplate:
      return "template";
    case Mode::kCache:
      return "cache";
    case Mode::kQemuCold:
      return "qemu-cold";
    case Mode::kQemuLoadvm:
      return "qemu-loadvm";
    case Mode::kTemplateUnconfined:
      return "template-unconfined";
    case Mode::kDaemonLoad:
      return "daemon-load";
    case Mode::kContainers:
      return "containers";
    case Mode::kRestore:
      return "restore";
  }
  return "?";
}

double Ms(Duration d) { return static_cast<double>(d.count()); }
double MsF(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
Duration Since(Clock::time_point t) { return std::chrono::duration_cast<Duration>(Clock::now() - t); }
Duration Between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<Duration>(b - a);
}

// Modes in the order given, each once; an unknown name is an error naming it.
Result<std::vector<Mode>> ParseModes(const std::vector<std::string>& names) {
  std::vector<Mode> modes;
  for (const auto& name : names) {
    std::optional<Mode> m;
    for (Mode c : {Mode::kCold, Mode::kTemplate, Mode::kCache, Mode::kQemuCold, Mode::kQemuLoadvm,
                   Mode::kTemplateUnconfined, Mode::kDaemonLoad, Mode::kContainers, Mode::kRestore}) {
      if (name == ModeName(c)) m = c;
    }
    if (!m) return InvalidArgument("unknown mode \"" + name + "\" (known modes: " + kKnownModes + ")");
    if (std::find(modes.begin(), modes.end(), *m) == modes.end()) modes.push_back(*m);
  }
  if (modes.empty())
    return InvalidArgument(std::string("--modes names no mode (known modes: ") + kKnownModes + ")");
  return modes;
}

bool Has(const std::vector<Mode>& modes, Mode m) {
  return std::find(modes.begin(), modes.end(), m) != modes.end();
}

// ---- small helpers ----

// The "Pss:" line of /proc/PID/smaps_rollup, in kB.
Result<uint64_t> ReadPssKb(pid_t pid) {
  if (pid <= 0) return FailedPrecondition("no such process (pid " + std::to_string(pid) + ")");
  return ReadKbLine("/proc/" + std::to_string(pid) + "/smaps_rollup", "Pss:");
}

// Runs argv to completion with stdout+stderr into out_file; returns the output.
Result<std::string> RunTool(const std::vector<std::string>& argv, const std::string& out_file,
                            Duration timeout) {
  UniqueFd out(::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return ErrnoStatus(errno, "create " + out_file);
  SpawnOptions so;
  so.stdout_fd = out.get();
  so.stderr_fd = out.get();
  VMF_ASSIGN_OR_RETURN(ChildProcess p, ChildProcess::Spawn(argv, so));
  out.reset();
  auto st = p.Wait(Deadline(timeout));
  if (!st.ok()) {
    p.Stop(std::chrono::milliseconds(200));
    return st.status().WithContext(argv[0]);
  }
  std::string text = TailOfFile(out_file, 8192);
  if (*st != 0) return Internal(argv[0] + " failed (" + DescribeWaitStatus(*st) + "): " + text);
  return text;
}

Status CopyFile(const std::string& from, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoStatus(errno, "open " + from);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return ErrnoStatus(errno, "create " + to);
  return CopyToEnd(in.get(), out.get(), "copy " + from + " to " + to);
}

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

// ---- the bench's private temp dir and template ----

// Everything of the bench lives under one private dir (0700) in the runtime
// dir: the template, every VM's runtime dir, the qcow2 snapshot, plot files.
// Removed with everything in it when this goes away.
class PrivateDir {
 public:
  static Result<std::unique_ptr<PrivateDir>> Create(const std::string& runtime) {
    VMF_RETURN_IF_ERROR(MakeDirs(runtime));
    std::string pattern = runtime + "/bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + pattern);  // 0700
    auto d = std::unique_ptr<PrivateDir>(new PrivateDir());
    d->dir_ = ScopedDir::Adopt(pattern);
    return d;
  }
  const std::string& path() const { return dir_.path(); }

 private:
  PrivateDir() = default;
  ScopedDir dir_;
};

// The bench's own template at ROOT/template: removed with DestroyTemplate
// when this goes away; the user's template is never looked at.
class BenchTemplate {
 public:
  static Result<std::unique_ptr<BenchTemplate>> Create(const VMConfig& config, const std::string& root) {
    VMF_RETURN_IF_ERROR(MakeDirs(root));
    std::unique_ptr<BenchTemplate> t(new BenchTemplate(root));
    auto start = Clock::now();
    TemplateOptions options;
    options.force = true;
    options.mount_tmpfs = false;
    options.progress = [](const std::string& step) {
      std::fprintf(stderr, "bench: template: %s\n", step.c_str());
    };
    VMF_ASSIGN_OR_RETURN(t->info_, CreateTemplate(config, t->root_, options));
    t->created_in_ = Since(start);
    return t;
  }
  ~BenchTemplate() {
    Status st = DestroyTemplate(root_);
    if (!st.ok() && st.code() != Code::kNotFound) {
      std::fprintf(stderr, "bench: could not remove the bench template %s: %s\n", root_.c_str(),
                   st.ToString().c_str());
    }
  }
  BenchTemplate(const BenchTemplate&) = delete;
  BenchTemplate& operator=(const BenchTemplate&) = delete;

  const TemplateInfo& info() const { return info_; }
  const std::string& root() const { return root_; }
  Duration created_in() const { return created_in_; }

 private:
  explicit BenchTemplate(std::string root) : root_(std::move(root)) {}
  std::string root_;
  TemplateInfo info_;
  Duration created_in_{0};
};

// ---- a measured VM, whatever its source ----

struct Sample {
  Duration total{0};
  StepTimes steps;  // in order; the last is "first exec output"
  bool cache_hit = false;
};

// A VM kept alive for the memory measurement.
class Instance {
 public:
  virtual ~Instance() = default;
  // PSS of the processes that make this VM (QEMU, and the proxy if any), kB.
  virtual Result<uint64_t> PssKb() = 0;
  // Its VM process (QEMU).
  virtual pid_t VmmPid() const = 0;
};

// Where a QEMU's PSS goes, in kB: the guest's RAM (the template's RAM file
// mapped in a clone, or an anonymous mapping at least the guest's size),
// TCG's translated code (anonymous executable mappings), and the rest:
// QEMU's own heap, device state, program and libraries.
struct PssSplit {
  uint64_t guest_kb = 0, tcg_code_kb = 0, vmm_kb = 0;
};

Result<PssSplit> SplitPss(pid_t pid, uint64_t guest_bytes) {
  const std::string path = "/proc/" + std::to_string(pid) + "/smaps";
  VMF_ASSIGN_OR_RETURN(const std::string text, ReadFile(path, 64 << 20));
  PssSplit split;
  std::istringstream lines(text);
  std::string line;
  enum class Kind { kGuest, kTcgCode, kVmm } kind = Kind::kVmm;
  uint64_t start = 0, end = 0;
  while (std::getline(lines, line)) {
    // A mapping's header: "start-end perms offset dev inode [path]".
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64, &start, &end) == 2 && line.find(':') > 18) {
      std::istringstream f(line);
      std::string range, perms, offset, dev, inode, name;
      f >> range >> perms >> offset >> dev >> inode;
      std::getline(f >> std::ws, name);
      const bool anon = inode == "0" && name.empty();
      if ((name.size() > 7 && name.ends_with("/memory")) || (anon && end - start >= guest_bytes)) {
        kind = Kind::kGuest;
      } else if (anon && perms.find('x') != std::string::npos) {
        kind = Kind::kTcgCode;
      } else {
        kind = Kind::kVmm;
      }
      continue;
    }
    if (line.rfind("Pss:", 0) != 0) continue;
    uint64_t kb = 0;
    if (std::sscanf(line.c_str() + 4, "%" SCNu64, &kb) != 1)
      return DataLoss("cannot parse \"" + line + "\" in " + path);
    (kind == Kind::kGuest ? split.guest_kb : kind == Kind::kTcgCode ? split.tcg_code_kb : split.vmm_kb) += kb;
  }
  return split;
}

class VmInstance : public Instance {
 public:
  explicit VmInstance(std::unique_ptr<VM> vm) : vm_(std::move(vm)) {}
  ~VmInstance() override { vm_->Stop(); }
  Result<uint64_t> PssKb() override {
    VMF_ASSIGN_OR_RETURN(uint64_t qemu_kb, ReadPssKb(vm_->vmm_pid()));
    VMF_ASSIGN_OR_RETURN(uint64_t proxy_kb, ReadPssKb(vm_->proxy_pid()));
    return qemu_kb + proxy_kb;
  }
  pid_t VmmPid() const override { return vm_->vmm_pid(); }

 private:
  std::unique_ptr<VM> vm_;
};

// Runs `echo ready` through the VM's agent (via its proxy) until the first
// output; waits for the exit afterwards (not timed).
Status EchoReady(AgentClient& agent, const std::string& exec_id, Clock::time_point* first_output_at) {
  ExecSpec spec;
  spec.exec_id = exec_id;
  spec.args = {"echo", "ready"};
  VMF_RETURN_IF_ERROR(agent.ExecProcess(spec).WithContext("exec echo"));
  VMF_ASSIGN_OR_RETURN(std::string out, agent.ReadStdout(exec_id, Deadline(kGuestCallTimeout)));
  *first_output_at = Clock::now();
  if (out.rfind("ready", 0) != 0) return Internal("echo ready printed \"" + out + "\"");
  VMF_ASSIGN_OR_RETURN(int code, agent.WaitProcess(exec_id, Deadline(kGuestCallTimeout)));
  if (code != 0) return Internal("echo exited with status " + std::to_string(code));
  return OkStatus();
}

// Where measured VMs come from. Once() may run on several threads at once.
class Source {
 public:
  virtual ~Source() = default;
  // Called before each measured latency sample and before a throughput round.
  virtual Status Prepare(CancelToken*) { return OkStatus(); }
  // Gets one VM and runs `echo ready` in it until its first output. If keep
  // is set the VM is handed over there, else it is stopped.
  virtual Result<Sample> Once(int i, std::unique_ptr<Instance>* keep, CancelToken* cancel) = 0;
  virtual void Describe(json*) const {}
};

// How full a factory's prepared VMs are (the pool's ready VMs, or the
// restore targets waiting), for a bench that measures hits.
struct Readiness {
  int have = 0, want = 0;
  std::string last_error;
};
Readiness ReadinessOf(const FactoryState& s) {
  if (s.pool) return {static_cast<int>(s.pool->ready.size()), s.pool->target, s.pool->last_error};
  if (s.restore)
    return {static_cast<int>(s.restore->waiting.size()), s.restore->target, s.restore->last_error};
  return {};
}

// Waits until the factory's pool or restore targets are full; gives up when
// making them has kept failing for a minute.
Status WaitFull(const Factory& factory, CancelToken* cancel) {
  Deadline d(std::chrono::seconds(300));
  Clock::time_point failing_since{};  // the epoch: not failing
  while (true) {
    const Readiness r = ReadinessOf(factory.State());
    if (r.have >= r.want) return OkStatus();
    if (cancel->cancelled()) return Cancelled("interrupted");
    if (r.last_error.empty()) {
      failing_since = {};
    } else if (failing_since == Clock::time_point{}) {
      failing_since = Clock::now();
    }
    const bool failing_long =
        failing_since != Clock::time_point{} && Since(failing_since) > std::chrono::seconds(60);
    if (d.expired() || failing_long) {
      return DeadlineExceeded("the factory did not fill (" + std::to_string(r.have) + "/" +
                              std::to_string(r.want) + " ready" +
                              (r.last_error.empty() ? "" : ", last error: " + r.last_error) + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// cold / template / restore / cache: VMs of the factory, reached through
// their proxy. `factory` (cache, restore) is waited for until full before
// each sample, so that each measures a hit.
class FactorySource : public Source {
 public:
  FactorySource(Mode mode, VMConfig config, const BenchTemplate* tmpl, Factory* factory)
      : mode_(mode), config_(std::move(config)), tmpl_(tmpl), factory_(factory) {}

  Status Prepare(CancelToken* cancel) override { return factory_ ? WaitFull(*factory_, cancel) : OkStatus(); }

  Result<Sample> Once(int i, std::unique_ptr<Instance>* keep, CancelToken* cancel) override {
    Sample s;
    auto t0 = Clock::now();
    std::unique_ptr<VM> vm;
    if (mode_ == Mode::kCold) {
      VMF_ASSIGN_OR_RETURN(vm, VM::Create(config_, &s.steps, cancel));
    } else if (mode_ == Mode::kTemplate || mode_ == Mode::kTemplateUnconfined) {
      VMF_ASSIGN_OR_RETURN(vm, CloneFromTemplate(tmpl_->info(), config_, &s.steps, cancel));
    } else {
      VMF_ASSIGN_OR_RETURN(Acquired got, factory_->GetVM(config_, &s.steps, cancel));
      s.cache_hit = mode_ == Mode::kCache ? got.source == VmSource::kPool
                                          : std::any_of(s.steps.begin(), s.steps.end(), [](const auto& step) {
                                              return step.first == "restore target taken";
                                            });
      vm = std::move(got.vm);
    }
    auto exec_at = Clock::now();
    Clock::time_point first{};
    Status st =
        EchoReady(vm->agent(), std::string("bench-") + ModeName(mode_) + "-" + std::to_string(i), &first);
    if (!st.ok()) return st;
    s.total = Between(t0, first);
    s.steps.emplace_back("first exec output", Between(exec_at, first));
    if (keep) {
      *keep = std::make_unique<VmInstance>(std::move(vm));
    } else {
      vm->Stop();
    }
    return s;
  }

 private:
  Mode mode_;
  VMConfig config_;
  const BenchTemplate* tmpl_;
  Factory* factory_;
};

// ---- plain QEMU, no factory, no proxy ----

// Kills a QEMU on Ctrl-C while it is ours; the guard makes sure the kill
// never reaches a pid that was reaped (and maybe reused) meanwhile.
struct KillGuard {
  std::mutex mu;
  pid_t pid = -1;
};

// One QEMU started by the bench itself through the QEMU backend (the same
// launcher, command line and QMP client as the factory's VMs), with its own
// dir under the private dir, but no proxy: the bench speaks ttrpc to the
// agent socket itself. Destroying it closes the channel, stops QEMU and
// removes the dir.
class RawQemu : public Instance {
 public:
  ~RawQemu() override {
    client_.reset();
    agent_fd_.reset();
    kill_.Reset();
    {
      std::lock_guard<std::mutex> l(guard_->mu);
      guard_->pid = -1;
    }
    hyp_.reset();  // stops QEMU
  }

  // Starts QEMU and connects to QMP (which answers once QEMU's main loop
  // runs, i.e. after -loadvm has restored the state).
  static Result<std::unique_ptr<RawQemu>> Start(const HypervisorConfig& config, const std::string& id,
                                                const std::string& dir, CancelToken* cancel,
                                                const Deadline& deadline) {
    std::unique_ptr<RawQemu> q(new RawQemu());
    VMF_ASSIGN_OR_RETURN(q->dir_, ScopedDir::Create(dir, 0700));
    VMF_ASSIGN_OR_RETURN(q->hyp_, QemuBackend().Create(id, config, q->dir_.path()));
    VMF_RETURN_IF_ERROR(q->hyp_->Start(deadline));
    q->guard_->pid = q->hyp_->pid();
    q->cancel_ = cancel;
    q->kill_ = ScopedCancelAction(cancel, [g = q->guard_] {
      std::lock_guard<std::mutex> l(g->mu);
      if (g->pid > 0) ::kill(g->pid, SIGKILL);
    });
    return q;
  }

  Status Alive() {
    if (cancel_ && cancel_->cancelled()) return Cancelled("interrupted");
    if (!hyp_->Running()) return Unavailable("QEMU exited: " + hyp_->ErrorOutput().value_or("(no output)"));
    return OkStatus();
  }

  // Connects to the agent socket and resynchronises the byte stream as the
  // proxy does (ttrpc/sync.h): the sync request on a random odd stream id,
  // re-sent every 1.5 s, every byte before its reply skipped. Then the
  // connection is handed to a ttrpc client numbering from sync id + 2.
  Status SyncAgent(const Deadline& deadline) {
    VMF_ASSIGN_OR_RETURN(agent_fd_, ConnectUnixUntil(hyp_->endpoints().agent, deadline));
    std::random_device rd;
    const uint32_t sync_id = (rd() % 0x3fffffffu) | 1u;
    const std::string frame = ttrpc::SyncRequestFrame(sync_id);
    ttrpc::SyncScanner scanner(sync_id);
    bool replied = false;         // decoded the whole sync reply
    ttrpc::FrameDecoder decoder;  // from the sync reply's header on: whole frames only
    std::vector<ttrpc::DecodeEvent> events;
    auto next_send = Clock::now();
    char buf[4096];
    while (true) {
      VMF_RETURN_IF_ERROR(Alive());
      if (deadline.expired()) return DeadlineExceeded("the agent did not answer the sync in time");
      if (!scanner.found() && Clock::now() >= next_send) {
        VMF_RETURN_IF_ERROR(
            WriteAll(agent_fd_.get(), frame, Deadline(std::chrono::seconds(2))).WithContext("send sync"));
        next_send = Clock::now() + kSyncRetry;
      }
      struct pollfd p {
        agent_fd_.get(), POLLIN, 0
      };
      int r = ::poll(&p, 1, 50);
      if (r < 0 && errno != EINTR) return ErrnoStatus(errno, "poll agent socket");
      if (r <= 0) continue;
      ssize_t n = ::read(agent_fd_.get(), buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return ErrnoStatus(errno, "read agent socket");
      if (n == 0) return Unavailable("the agent channel closed during the sync");
      auto data = scanner.Feed(std::string_view(buf, static_cast<size_t>(n)));
      if (!data) continue;
      events.clear();
      decoder.Feed(*data, &events);
      for (auto& ev : events) {
        if (ev.kind != ttrpc::DecodeEvent::kFrame || ev.frame.stream_id != sync_id) continue;
        ::ttrpc::Response resp;
        if (!resp.ParseFromString(ev.frame.payload)) return DataLoss("malformed sync reply");
        VMF_RETURN_IF_ERROR(ttrpc::StatusFromWire(resp.status().code(), resp.status().message()));
        replied = true;
      }
      // Hand over on a frame boundary; later replies to re-sent syncs are
      // whole frames for an id the client never uses, which it drops.
      if (replied && !decoder.mid_frame()) {
        client_ = std::make_unique<ttrpc::Client>(std::move(agent_fd_), sync_id + 2);
        return OkStatus();
      }
    }
  }

  // ExecProcess `echo ready` and ReadStdout until its first output.
  Status EchoReady(const std::string& exec_id, Clock::time_point* first_output_at) {
    grpc::ExecProcessRequest req;
    req.set_exec_id(exec_id);
    req.mutable_process()->add_args("echo");
    req.mutable_process()->add_args("ready");
    req.mutable_process()->set_cwd("/");
    grpc::Empty empty;
    VMF_RETURN_IF_ERROR(
        client_->Call("grpc.AgentService", "ExecProcess", req, &empty, Deadline(kGuestCallTimeout))
            .WithContext("exec echo"));
    grpc::ReadStreamRequest rreq;
    rreq.set_exec_id(exec_id);
    rreq.set_len(4096);
    grpc::ReadStreamResponse rresp;
    VMF_RETURN_IF_ERROR(
        client_->Call("grpc.AgentService", "ReadStdout", rreq, &rresp, Deadline(kGuestCallTimeout)));
    *first_output_at = Clock::now();
    if (rresp.data().rfind("ready", 0) != 0) return Internal("echo ready printed \"" + rresp.data() + "\"");
    return OkStatus();
  }

  qmp::QmpClient& qmp() { return *QemuQmp(*hyp_); }
  void CloseAgent() {
    client_.reset();
    agent_fd_.reset();
  }
  // Waits for QEMU to exit by itself (after a QMP quit).
  Status WaitExit(Duration d) {
    Deadline deadline(d);
    while (hyp_->Running()) {
      if (deadline.expired()) return DeadlineExceeded("QEMU did not exit");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return OkStatus();
  }
  Result<uint64_t> PssKb() override { return ReadPssKb(hyp_->pid()); }
  pid_t VmmPid() const override { return hyp_->pid(); }

 private:
  RawQemu() = default;

  ScopedDir dir_;
  std::unique_ptr<Hypervisor> hyp_;
  std::shared_ptr<KillGuard> guard_ = std::make_shared<KillGuard>();
  CancelToken* cancel_ = nullptr;
  ScopedCancelAction kill_;
  UniqueFd agent_fd_;
  std::unique_ptr<ttrpc::Client> client_;
};

// qemu-cold and qemu-loadvm: QEMU with the factory's own command line
// (the QEMU backend: same kernel, initramfs, machine, memory and vCPUs).
class RawQemuSource : public Source {
 public:
  RawQemuSource(Mode mode, VMConfig config, std::string dir, bool kvm)
      : mode_(mode), config_(std::move(config)), dir_(std::move(dir)), kvm_(kvm) {
    config_.hypervisor.boot = BootMode::kCold;
  }

  // qemu-loadvm: a qcow2 disk, a cold boot until the agent answers, then
  // savevm into the disk and quit. Once per run, not measured.
  Status MakeSnapshot(CancelToken* cancel) {
    auto start = Clock::now();
    std::string snapdir = dir_ + "/loadvm";
    VMF_RETURN_IF_ERROR(MakeDirs(snapdir));
    disk_ = snapdir + "/disk.qcow2";
    std::string img = FindProgram("qemu-img");
    if (img.empty()) return FailedPrecondition("qemu-img not found (Debian package qemu-utils)");
    VMF_RETURN_IF_ERROR(RunTool({img, "create", "-f", "qcow2", disk_, "1G"}, snapdir + "/qemu-img.log",
                                std::chrono::seconds(60))
                            .status());
    std::fprintf(stderr, "bench: qemu-loadvm: cold-booting the VM to snapshot\n");
    Deadline deadline(config_.agent.boot_timeout);
    VMF_ASSIGN_OR_RETURN(
        auto q, RawQemu::Start(Config(disk_, false), "bench-snap", snapdir + "/vm", cancel, deadline));
    VMF_RETURN_IF_ERROR(q->SyncAgent(deadline).WithContext("snapshot VM"));
    // No host client on the agent channel while saving (as for templates).
    q->CloseAgent();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::fprintf(stderr, "bench: qemu-loadvm: savevm\n");
    VMF_ASSIGN_OR_RETURN(json out,
                         q->qmp().Execute("human-monitor-command", json{{"command-line", "savevm bench"}},
                                          Deadline(std::chrono::seconds(300))));
    std::string text = out.is_string() ? out.get<std::string>() : out.dump();
    if (!text.empty() && text.find_first_not_of(" \r\n") != std::string::npos) {
      return Internal("savevm said: " + text);
    }
    (void)q->qmp().Execute("quit", nullptr, Deadline(std::chrono::seconds(5)));
    (void)q->WaitExit(std::chrono::seconds(10));
    q.reset();
    struct stat sb {};
    if (::stat(disk_.c_str(), &sb) == 0) disk_bytes_ = static_cast<uint64_t>(sb.st_size);
    made_in_ = Since(start);
    std::fprintf(stderr, "bench: qemu-loadvm: snapshot made in %.2f s (%.1f MiB qcow2)\n",
                 Ms(made_in_) / 1000.0, static_cast<double>(disk_bytes_) / (1 << 20));
    return OkStatus();
  }

  Result<Sample> Once(int i, std::unique_ptr<Instance>* keep, CancelToken* cancel) override {
    int n = ++seq_;
    std::string name = std::string(mode_ == Mode::kQemuCold ? "cold-" : "loadvm-") + std::to_string(n);
    std::string vmdir = dir_ + "/" + name;
    std::string disk;
    if (mode_ == Mode::kQemuLoadvm) {
      // loadvm writes to the image (it switches its L1 table), so QEMUs at
      // once cannot share one: each gets a copy, made before the clock starts.
      disk = dir_ + "/" + name + ".qcow2";
      VMF_RETURN_IF_ERROR(CopyFile(disk_, disk));
    }
    Cleanup remove_disk([disk] {
      if (!disk.empty()) ::unlink(disk.c_str());
    });

    Sample s;
    Deadline deadline(config_.agent.boot_timeout);
    auto t0 = Clock::now();
    VMF_ASSIGN_OR_RETURN(auto q, RawQemu::Start(Config(disk, mode_ == Mode::kQemuLoadvm), "bench-" + name,
                                                vmdir, cancel, deadline));
    auto t1 = Clock::now();
    s.steps.emplace_back(mode_ == Mode::kQemuCold ? "qemu start" : "qemu start + loadvm", Between(t0, t1));
    VMF_RETURN_IF_ERROR(q->SyncAgent(deadline));
    auto t2 = Clock::now();
    s.steps.emplace_back(mode_ == Mode::kQemuCold ? "guest boot + agent sync" : "agent sync",
                         Between(t1, t2));
    Clock::time_point first{};
    VMF_RETURN_IF_ERROR(q->EchoReady("bench-" + name, &first));
    s.steps.emplace_back("first exec output", Between(t2, first));
    s.total = Between(t0, first);
    if (keep) {
      // The disk copy stays until the instance goes (it is in the VM's dir's parent).
      remove_disk.Cancel();
      struct Kept : Instance {
        std::unique_ptr<RawQemu> q;
        std::string disk;
        ~Kept() override {
          q.reset();
          if (!disk.empty()) ::unlink(disk.c_str());
        }
        Result<uint64_t> PssKb() override { return q->PssKb(); }
        pid_t VmmPid() const override { return q->VmmPid(); }
      };
      auto k = std::make_unique<Kept>();
      k->q = std::move(q);
      k->disk = disk;
      *keep = std::move(k);
    }
    return s;
  }

  void Describe(json* j) const override {
    if (mode_ == Mode::kQemuLoadvm) {
      (*j)["snapshot_made_s"] = Ms(made_in_) / 1000.0;
      (*j)["snapshot_qcow2_bytes"] = disk_bytes_;
    }
    (*j)["qemu_argv_example"] = QemuArgv(
        "bench-N", Config(mode_ == Mode::kQemuLoadvm ? dir_ + "/N.qcow2" : "", mode_ == Mode::kQemuLoadvm),
        dir_ + "/N", {.use_kvm = kvm_});
  }

 private:
  // The factory's VM config, plus a snapshot disk and -loadvm if asked.
  HypervisorConfig Config(const std::string& disk, bool loadvm) const {
    HypervisorConfig h = config_.hypervisor;
    if (!disk.empty()) {
      h.qemu.extra_args.insert(h.qemu.extra_args.end(),
                               {"-drive", "file=" + disk + ",if=none,id=snap,format=qcow2", "-device",
                                "virtio-blk-pci,drive=snap"});
    }
    if (loadvm) h.qemu.extra_args.insert(h.qemu.extra_args.end(), {"-loadvm", "bench"});
    return h;
  }

  Mode mode_;
  VMConfig config_;
  std::string dir_;
  bool kvm_;
  std::string disk_;
  uint64_t disk_bytes_ = 0;
  Duration made_in_{0};
  std::atomic<int> seq_{0};
};

// ---- measurements ----

struct LatencyStats {
  std::vector<Sample> samples;
  Duration p50{0}, p95{0}, max{0};
  std::vector<std::pair<std::string, double>> step_means_ms;  // in the order the steps first appeared
  int cache_hits = 0;
  Duration hit_p50{0};
};

Result<LatencyStats> MeasureLatency(Mode mode, Source& src, int iterations, CancelToken* cancel) {
  LatencyStats stats;
  for (int i = 1; i <= iterations; ++i) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    VMF_RETURN_IF_ERROR(src.Prepare(cancel));
    VMF_ASSIGN_OR_RETURN(Sample s, src.Once(i, nullptr, cancel));
    std::fprintf(stderr, "bench: %s latency %d/%d: %lld ms%s\n", ModeName(mode), i, iterations,
                 static_cast<long long>(s.total.count()),
                 mode == Mode::kCache     ? (s.cache_hit ? " (pool hit)" : " (pool MISS)")
                 : mode == Mode::kRestore ? (s.cache_hit ? " (restore target)" : " (no target: a clone)")
                                          : "");
    stats.samples.push_back(std::move(s));
  }
  std::vector<Duration> totals, hits;
  for (const auto& s : stats.samples) {
    totals.push_back(s.total);
    if (s.cache_hit) hits.push_back(s.total);
  }
  stats.p50 = Percentile(totals, 50);
  stats.p95 = Percentile(totals, 95);
  stats.max = *std::max_element(totals.begin(), totals.end());
  stats.cache_hits = static_cast<int>(hits.size());
  stats.hit_p50 = Percentile(hits, 50);

  std::vector<std::pair<std::string, std::vector<Duration>>> by_step;
  for (const auto& s : stats.samples) {
    for (const auto& step : s.steps) {
      auto it =
          std::find_if(by_step.begin(), by_step.end(), [&](const auto& e) { return e.first == step.first; });
      if (it == by_step.end()) it = by_step.insert(by_step.end(), {step.first, {}});
      it->second.push_back(step.second);
    }
  }
  for (const auto& [name, ds] : by_step) {
    double sum = 0;
    for (Duration d : ds) sum += Ms(d);
    stats.step_means_ms.emplace_back(name, sum / static_cast<double>(ds.size()));
  }
  return stats;
}

// K VMs alive at once (started one after the other); the mean PSS per VM in
// MiB, and into `split` the mean of where QEMU's part goes (SplitPss).
Result<double> MeasureMemory(Mode mode, Source& src, int k, uint64_t guest_bytes, json* split,
                             CancelToken* cancel) {
  std::vector<std::unique_ptr<Instance>> vms;
  for (int i = 1; i <= k; ++i) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    std::unique_ptr<Instance> inst;
    VMF_RETURN_IF_ERROR(src.Once(1000 + i, &inst, cancel).status());
    std::fprintf(stderr, "bench: %s memory: VM %d/%d running\n", ModeName(mode), i, k);
    vms.push_back(std::move(inst));
  }
  uint64_t total_kb = 0;
  PssSplit sum;
  for (auto& vm : vms) {
    VMF_ASSIGN_OR_RETURN(uint64_t kb, vm->PssKb());
    total_kb += kb;
    VMF_ASSIGN_OR_RETURN(PssSplit s, SplitPss(vm->VmmPid(), guest_bytes));
    sum.guest_kb += s.guest_kb;
    sum.tcg_code_kb += s.tcg_code_kb;
    sum.vmm_kb += s.vmm_kb;
  }
  const double n = static_cast<double>(vms.size());
  double mean_mib = static_cast<double>(total_kb) / n / 1024.0;
  auto mib = [&](uint64_t kb) { return static_cast<double>(kb) / n / 1024.0; };
  *split = {{"guest_ram", mib(sum.guest_kb)},
            {"tcg_code", mib(sum.tcg_code_kb)},
            {"qemu_own", mib(sum.vmm_kb)},
            {"proxy", mean_mib - mib(sum.guest_kb + sum.tcg_code_kb + sum.vmm_kb)}};
  std::fprintf(
      stderr,
      "bench: %s memory: %.1f MiB PSS per VM (%d at once): guest RAM %.1f, TCG code %.1f, QEMU's own "
      "%.1f, proxy %.1f; stopping them\n",
      ModeName(mode), mean_mib, k, mib(sum.guest_kb), mib(sum.tcg_code_kb), mib(sum.vmm_kb),
      mean_mib - mib(sum.guest_kb + sum.tcg_code_kb + sum.vmm_kb));
  return mean_mib;
}

struct Throughput {
  int vms = 0;
  double wall_s = 0;
  double per_minute = 0;
};

// C workers at once, each getting kThroughputPerWorker VMs (to first output)
// one after the other; VMs ready per minute of wall time.
Result<Throughput> MeasureThroughput(Mode mode, Source& src, int c, CancelToken* cancel) {
  VMF_RETURN_IF_ERROR(src.Prepare(cancel));
  std::mutex mu;
  Status first_error;
  std::atomic<int> done{0};
  auto start = Clock::now();
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(std::max(c, 0)));
  for (int w = 0; w < c; ++w) {
    workers.emplace_back([&, w] {
      for (int j = 0; j < kThroughputPerWorker; ++j) {
        if (cancel->cancelled()) return;
        {
          std::lock_guard<std::mutex> l(mu);
          if (!first_error.ok()) return;
        }
        auto s = src.Once(2000 + w * 100 + j, nullptr, cancel);
        if (!s.ok()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.ok()) first_error = s.status();
          return;
        }
        int n = ++done;
        std::fprintf(stderr, "bench: %s throughput: %d/%d ready (%lld ms)\n", ModeName(mode), n,
                     c * kThroughputPerWorker, static_cast<long long>(s->total.count()));
      }
    });
  }
  for (auto& t : workers) t.join();
  if (cancel->cancelled()) return Cancelled("interrupted");
  if (!first_error.ok()) return first_error.WithContext("throughput");
  Throughput t;
  t.vms = done.load();
  t.wall_s = MsF(Clock::now() - start) / 1000.0;
  t.per_minute = t.wall_s > 0 ? t.vms / t.wall_s * 60.0 : 0;
  std::fprintf(stderr, "bench: %s throughput: %d VMs in %.2f s with %d at once: %.1f per minute\n",
               ModeName(mode), t.vms, t.wall_s, c, t.per_minute);
  return t;
}

// ---- report ----

struct ModeResult {
  Mode mode;
  Status status;  // not OK: the mode could not be measured
  LatencyStats latency;
  double pss_mib = 0;
  Throughput throughput;
  json extra = json::object();
};

double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

struct Ratios {
  double latency_p50 = 0, memory = 0, throughput = 0;
};

Ratios RatiosOf(const ModeResult& r, const ModeResult& base) {
  return {Ratio(Ms(r.latency.p50), Ms(base.latency.p50)), Ratio(r.pss_mib, base.pss_mib),
          Ratio(r.throughput.per_minute, base.throughput.per_minute)};
}

json MachineJson(const VMConfig& config, bool kvm, const std::string& tmp) {
  json m;
  std::string model = "unknown";
  if (auto cpu = ReadFile("/proc/cpuinfo", 16 << 20); cpu.ok()) {
    std::istringstream in(*cpu);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
        model = line.substr(line.find(':') + 2);
        break;
      }
    }
  }
  m["cpu_model"] = model;
  m["cores"] = std::thread::hardware_concurrency();
  if (auto mem = ReadFile("/proc/meminfo"); mem.ok()) {
    std::istringstream in(*mem);
    std::string key;
    uint64_t kb = 0;
    if (in >> key >> kb && key == "MemTotal:") m["memory_mib"] = kb / 1024;
  }
  struct utsname u {};
  if (::uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.version;
  m["accel"] = kvm ? "KVM" : "TCG";
  std::string qemu = FindProgram(config.hypervisor.qemu.path);
  auto ver = qemu.empty() ? Result<std::string>(NotFound("no qemu"))
                          : RunTool({qemu, "--version"}, tmp + "/qemu-version.txt", std::chrono::seconds(20));
  m["qemu_version"] = ver.ok() ? FirstLine(*ver) : "unknown";
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) == 3) m["loadavg_at_end"] = {load[0], load[1], load[2]};
  m["guest"] = {{"kernel", config.hypervisor.kernel},
                {"initrd", config.hypervisor.initrd},
                {"machine", config.hypervisor.qemu.machine},
                {"vcpus", config.hypervisor.vcpus},
                {"memory_mib", config.hypervisor.memory_mib}};
  return m;
}

json ResultsJson(const BenchOptions& opts, const std::vector<ModeResult>& results, const ModeResult* base,
                 const json& machine, const BenchTemplate* tmpl) {
  json j;
  j["command_line"] = opts.command_line;
  j["machine"] = machine;
  j["settings"] = {{"iterations", opts.iterations},
                   {"concurrency", opts.concurrency},
                   {"memory_vms_at_once", opts.concurrency_mem},
                   {"throughput_vms", opts.concurrency * kThroughputPerWorker}};
  if (tmpl) j["template_made_s"] = Ms(tmpl->created_in()) / 1000.0;
  j["baseline"] = base ? json(ModeName(base->mode)) : json(nullptr);
  json modes = json::array();
  for (const auto& r : results) {
    json m;
    m["mode"] = ModeName(r.mode);
    if (!r.status.ok()) {
      m["error"] = r.status.ToString();
      modes.push_back(m);
      continue;
    }
    json samples = json::array();
    for (const auto& s : r.latency.samples) {
      json steps = json::array();
      for (const auto& [name, d] : s.steps) steps.push_back({{"step", name}, {"ms", d.count()}});
      json e = {{"total_ms", s.total.count()}, {"steps", steps}};
      if (r.mode == Mode::kCache) e["cache_hit"] = s.cache_hit;
      if (r.mode == Mode::kRestore) e["restore_target_hit"] = s.cache_hit;
      samples.push_back(e);
    }
    m["latency_ms"] = {{"p50", r.latency.p50.count()},
                       {"p95", r.latency.p95.count()},
                       {"max", r.latency.max.count()},
                       {"samples", samples}};
    json means = json::array();
    for (const auto& [name, ms] : r.latency.step_means_ms) means.push_back({{"step", name}, {"mean_ms", ms}});
    m["step_means"] = means;
    m["pss_mib_per_vm"] = r.pss_mib;
    m["pss_counts"] = (r.mode == Mode::kQemuCold || r.mode == Mode::kQemuLoadvm) ? "qemu" : "qemu+proxy";
    m["throughput"] = {{"vms", r.throughput.vms},
                       {"wall_s", r.throughput.wall_s},
                       {"vms_per_minute", r.throughput.per_minute},
                       {"concurrency", opts.concurrency}};
    if (r.mode == Mode::kCache) {
      m["cache_hits"] = r.latency.cache_hits;
      m["cache_hit_p50_ms"] = r.latency.hit_p50.count();
      m["target_cache_hit_p50_under_ms"] = kTargetCacheHitMs;
      m["target_met"] = r.latency.cache_hits > 0 && Ms(r.latency.hit_p50) < kTargetCacheHitMs;
    }
    if (base && base->status.ok()) {
      Ratios q = RatiosOf(r, *base);
      m["ratios_vs_baseline"] = {
          {"latency_p50", q.latency_p50}, {"memory", q.memory}, {"throughput", q.throughput}};
    }
    for (auto& [k, v] : r.extra.items()) m[k] = v;
    modes.push_back(m);
  }
  j["modes"] = modes;
  return j;
}

void PrintReport(const BenchOptions& opts, const std::vector<ModeResult>& results, const ModeResult* base,
                 const BenchTemplate* tmpl) {
  std::printf("\n");
  if (tmpl) {
    std::printf("template: made in %.2f s (%u vCPUs, %u MiB), private to this run\n",
                Ms(tmpl->created_in()) / 1000.0, tmpl->info().hypervisor.vcpus,
                tmpl->info().hypervisor.memory_mib);
  }
  for (const auto& r : results) {
    if (!r.status.ok()) continue;
    std::printf("%s steps (mean ms):\n", ModeName(r.mode));
    for (const auto& [name, ms] : r.latency.step_means_ms) std::printf("  %-48s %9.1f\n", name.c_str(), ms);
  }
  std::printf("\nPSS per VM, split (mean MiB): guest RAM, TCG's translated code, QEMU's own, proxy\n");
  for (const auto& r : results) {
    if (!r.status.ok() || !r.extra.contains("pss_split_mib")) continue;
    const json& s = r.extra["pss_split_mib"];
    std::printf("  %-19s %7.1f %7.1f %7.1f %7.1f\n", ModeName(r.mode), s.value("guest_ram", 0.0),
                s.value("tcg_code", 0.0), s.value("qemu_own", 0.0), s.value("proxy", 0.0));
  }
  if (results.empty()) return;
  std::string base_name = base ? ModeName(base->mode) : "-";
  std::printf("\n%-19s %3s %8s %8s %8s %9s %8s %9s %9s %9s\n", "mode", "n", "p50 ms", "p95 ms", "max ms",
              "PSS MiB", "VMs/min", "p50 ratio", "PSS ratio", "thr ratio");
  for (const auto& r : results) {
    if (!r.status.ok()) {
      std::printf("%-19s FAILED: %s\n", ModeName(r.mode), r.status.ToString().c_str());
      continue;
    }
    Ratios q = base && base->status.ok() ? RatiosOf(r, *base) : Ratios{};
    std::printf("%-19s %3zu %8lld %8lld %8lld %9.1f %8.1f %9.3f %9.3f %9.2f\n", ModeName(r.mode),
                r.latency.samples.size(), static_cast<long long>(r.latency.p50.count()),
                static_cast<long long>(r.latency.p95.count()), static_cast<long long>(r.latency.max.count()),
                r.pss_mib, r.throughput.per_minute, q.latency_p50, q.memory, q.throughput);
  }
  std::printf(
      "(latency: request until `echo ready` printed; PSS: mean over %d VMs alive at once, QEMU + proxy,\n"
      " QEMU only for qemu-*; VMs/min: %d VMs with %d requests at once; ratios against %s, same run)\n",
      opts.concurrency_mem, opts.concurrency * kThroughputPerWorker, opts.concurrency, base_name.c_str());

  auto find = [&](Mode m) -> const ModeResult* {
    for (const auto& r : results) {
      if (r.mode == m && r.status.ok()) return &r;
    }
    return nullptr;
  };
  const ModeResult* cold = find(Mode::kCold);
  const ModeResult* clone = find(Mode::kTemplate);
  if (cold && clone) {
    double speedup = Ratio(Ms(cold->latency.p50), std::max(1.0, Ms(clone->latency.p50)));
    double memory_ratio = Ratio(clone->pss_mib, cold->pss_mib);
    std::printf("target: template p50 >= %.0fx faster than cold: %s (%.1fx)\n", kTargetSpeedup,
                speedup >= kTargetSpeedup ? "met" : "NOT met", speedup);
    std::printf("target: clone PSS <= %.0f%% of cold: %s (%.1f%%)\n", kTargetMemoryRatio * 100,
                memory_ratio <= kTargetMemoryRatio ? "met" : "NOT met", memory_ratio * 100);
  }
  if (const ModeResult* unconfined = find(Mode::kTemplateUnconfined); unconfined && clone) {
    std::printf(
        "confinement: clone p50 %lld ms confined vs %lld ms unconfined (%+lld ms, x%.2f); PSS %.1f vs %.1f "
        "MiB\n",
        static_cast<long long>(clone->latency.p50.count()),
        static_cast<long long>(unconfined->latency.p50.count()),
        static_cast<long long>(clone->latency.p50.count() - unconfined->latency.p50.count()),
        Ratio(Ms(clone->latency.p50), std::max(1.0, Ms(unconfined->latency.p50))), clone->pss_mib,
        unconfined->pss_mib);
  }
  for (Mode m : {Mode::kTemplate, Mode::kRestore}) {
    const ModeResult* r = find(m);
    if (!r) continue;
    std::printf("target: %s GetVM until first output p50 <= %.0f ms: %s (%lld ms)\n", ModeName(m),
                kTargetCloneFirstOutputMs,
                Ms(r->latency.p50) <= kTargetCloneFirstOutputMs ? "met" : "NOT met",
                static_cast<long long>(r->latency.p50.count()));
    std::printf("target: %s idle clone PSS <= %.0f MiB: %s (%.1f MiB, %d alive)\n", ModeName(m),
                kTargetIdleClonePssMib, r->pss_mib <= kTargetIdleClonePssMib ? "met" : "NOT met", r->pss_mib,
                opts.concurrency_mem);
  }
  if (const ModeResult* restore = find(Mode::kRestore);
      restore && restore->extra.contains("waiting_target_pss_mib")) {
    const double pss = restore->extra["waiting_target_pss_mib"].get<double>();
    std::printf("target: waiting restore target PSS <= %.0f MiB: %s (%.1f MiB, %d waiting)\n",
                kTargetWaitingTargetPssMib, pss <= kTargetWaitingTargetPssMib ? "met" : "NOT met", pss,
                restore->extra.value("waiting_targets_measured", 0));
  }
  if (const ModeResult* cache = find(Mode::kCache)) {
    if (cache->latency.cache_hits == 0) {
      std::printf("target: cache-hit p50 < %.0f ms: no pool hit measured\n", kTargetCacheHitMs);
    } else {
      std::printf("target: cache-hit p50 < %.0f ms: %s (%lld ms over %d hits)\n", kTargetCacheHitMs,
                  Ms(cache->latency.hit_p50) < kTargetCacheHitMs ? "met" : "NOT met",
                  static_cast<long long>(cache->latency.hit_p50.count()), cache->latency.cache_hits);
    }
  }
}

// The end-to-end figures, with ratios against the cold `run` of the same bench.
const EndToEndResult* ColdRun(const std::vector<EndToEndResult>& e2e) {
  for (const auto& r : e2e) {
    if (r.source == "cold" && r.status.ok()) return &r;
  }
  return nullptr;
}

void PrintEndToEnd(const std::vector<EndToEndResult>& e2e) {
  if (e2e.empty()) return;
  const EndToEndResult* cold = ColdRun(e2e);
  std::printf("\nend to end: `vmfactory run -- true`, a process from start to exit (as `time` sees it)\n");
  std::printf("%-19s %3s %8s %8s %11s\n", "source", "n", "p50 ms", "p95 ms", "cold / this");
  for (const auto& r : e2e) {
    if (!r.status.ok()) {
      std::printf("%-19s FAILED: %s\n", r.source.c_str(), r.status.ToString().c_str());
      continue;
    }
    double speedup = cold ? Ratio(Ms(cold->p50), std::max(1.0, Ms(r.p50))) : 0;
    std::printf("%-19s %3zu %8lld %8lld %10.1fx\n", r.source.c_str(), r.samples.size(),
                static_cast<long long>(r.p50.count()), static_cast<long long>(r.p95.count()), speedup);
  }
  if (!cold) return;
  // A clone of a restore target is a template clone too.
  for (const auto& [source, target] : {std::pair<std::string, double>{"template", kTargetRunTemplateSpeedup},
                                       std::pair<std::string, double>{"restore", kTargetRunTemplateSpeedup},
                                       std::pair<std::string, double>{"cache", kTargetRunPoolSpeedup}}) {
    for (const auto& r : e2e) {
      if (r.source != source || !r.status.ok()) continue;
      double speedup = Ratio(Ms(cold->p50), std::max(1.0, Ms(r.p50)));
      const char* what = source == "cache"     ? "pool"
                         : source == "restore" ? "template (a restore target of the daemon)"
                                               : "template";
      std::printf("target: `run` from the %s >= %.0fx faster than cold: %s (%.1fx)\n", what, target,
                  speedup >= target ? "met" : "NOT met", speedup);
    }
  }
}

json EndToEndJson(const std::vector<EndToEndResult>& e2e) {
  const EndToEndResult* cold = ColdRun(e2e);
  json out = json::array();
  for (const auto& r : e2e) {
    json e = {{"source", r.source}, {"command", "vmfactory run -v -- true"}};
    if (!r.status.ok()) {
      e["error"] = r.status.ToString();
    } else {
      json samples = json::array();
      for (Duration d : r.samples) samples.push_back(d.count());
      e["wall_ms"] = {{"p50", r.p50.count()}, {"p95", r.p95.count()}, {"samples", samples}};
      if (cold) e["speedup_vs_cold"] = Ratio(Ms(cold->p50), std::max(1.0, Ms(r.p50)));
    }
    out.push_back(e);
  }
  return out;
}

void PrintDaemonLoad(const std::vector<DaemonLoadResult>& load, int per_worker) {
  if (load.empty()) return;
  std::printf(
      "\ndaemon under load: clients at once, each taking %d VM(s) in turn (GetVM, attach, `true`, stop);\n"
      "a pool of 2 and 2 restore targets over the template; larger bursts are served by clones\n",
      per_worker);
  std::printf("%7s %4s %5s %7s %7s %6s %13s %13s\n", "clients", "VMs", "pool", "targets", "wall s", "VMs/s",
              "GetVM p50 ms", "GetVM p99 ms");
  for (const auto& r : load) {
    if (!r.status.ok()) {
      std::printf("%7d FAILED: %s\n", r.concurrency, r.status.ToString().c_str());
      continue;
    }
    std::printf("%7d %4d %5d %7d %7.2f %6.2f %13lld %13lld\n", r.concurrency, r.vms, r.from_pool,
                r.from_targets, r.wall_s, r.vms_per_s, static_cast<long long>(r.getvm_p50.count()),
                static_cast<long long>(r.getvm_p99.count()));
  }
}

void PrintContainers(const ContainerBenchResult& c) {
  std::printf("\ncontainers: `ctr run --rm IMAGE ID /bin/true` on a private containerd, start to exit\n");
  if (!c.status.ok()) {
    std::printf("  not measured: %s\n", c.status.ToString().c_str());
    return;
  }
  const ContainerSourceResult* runc = nullptr;
  for (const auto& r : c.sources) {
    if (r.source == "runc" && r.status.ok()) runc = &r;
  }
  std::printf("%-10s %8s %8s %10s\n", "runtime", "p50 ms", "p95 ms", "vs runc");
  for (const auto& r : c.sources) {
    if (!r.status.ok()) {
      std::printf("%-10s FAILED: %s\n", r.source.c_str(), r.status.ToString().c_str());
      continue;
    }
    const double ratio = runc && runc->p50.count() > 0 ? Ms(r.p50) / Ms(runc->p50) : 0;
    std::printf("%-10s %8lld %8lld %9.2fx\n", r.source.c_str(), static_cast<long long>(r.p50.count()),
                static_cast<long long>(r.p95.count()), ratio);
    if (r.source == "pool" && runc) {
      std::printf("  target: pool-backed within %.0fx of runc: %s\n", kTargetCtrPoolVsRunc,
                  ratio <= kTargetCtrPoolVsRunc ? "met" : "NOT met");
    }
  }
  if (!c.memory_status.ok()) {
    std::printf("pod memory: not measured: %s\n", c.memory_status.ToString().c_str());
    return;
  }
  const double shim_mib = static_cast<double>(c.shim_rss_kib) / 1024.0;
  std::printf(
      "pod memory (a template clone running `sleep`): shim RSS %.1f MiB, QEMU RSS %.1f MiB, PSS %.1f MiB\n",
      shim_mib, static_cast<double>(c.qemu_rss_kib) / 1024.0, static_cast<double>(c.qemu_pss_kib) / 1024.0);
  std::printf("  target: shim under %.0f MiB resident per pod: %s\n", kTargetShimRssMib,
              shim_mib < kTargetShimRssMib ? "met" : "NOT met");
}

json ContainersJson(const ContainerBenchResult& c) {
  json out = json::object();
  if (!c.status.ok()) {
    out["error"] = c.status.ToString();
    return out;
  }
  out["runtimes"] = json::array();
  for (const auto& r : c.sources) {
    json e = {{"runtime", r.source}};
    if (!r.status.ok()) {
      e["error"] = r.status.ToString();
    } else {
      json samples = json::array();
      for (auto d : r.samples) samples.push_back(d.count());
      e["ctr_run_ms"] = {{"p50", r.p50.count()}, {"p95", r.p95.count()}, {"samples", samples}};
    }
    out["runtimes"].push_back(e);
  }
  if (c.memory_status.ok()) {
    out["pod_memory_kib"] = {
        {"shim_rss", c.shim_rss_kib}, {"qemu_rss", c.qemu_rss_kib}, {"qemu_pss", c.qemu_pss_kib}};
  } else {
    out["pod_memory_error"] = c.memory_status.ToString();
  }
  return out;
}

json DaemonLoadJson(const std::vector<DaemonLoadResult>& load) {
  json out = json::array();
  for (const auto& r : load) {
    json e = {{"concurrency", r.concurrency}};
    if (!r.status.ok()) {
      e["error"] = r.status.ToString();
    } else {
      e["vms"] = r.vms;
      e["from_pool"] = r.from_pool;
      e["from_restore_targets"] = r.from_targets;
      e["wall_s"] = r.wall_s;
      e["vms_per_s"] = r.vms_per_s;
      e["getvm_ms"] = {{"p50", r.getvm_p50.count()}, {"p99", r.getvm_p99.count()}};
    }
    out.push_back(e);
  }
  return out;
}

// A single-quoted gnuplot string (the path must not hold a quote or newline).
Result<std::string> GnuplotString(const std::string& s) {
  if (s.find_first_of("'\n\r") != std::string::npos)
    return InvalidArgument("path has a quote or newline: " + s);
  return "'" + s + "'";
}

// Writes data files and a script into the temp dir, runs gnuplot on them.
Status Plot(const std::string& out_png, const std::vector<ModeResult>& results, const json& machine,
            const std::string& tmp, const BenchOptions& opts) {
  std::string gnuplot = FindProgram("gnuplot");
  if (gnuplot.empty()) {
    return NotFound(
        "gnuplot is not installed (Debian: apt-get install gnuplot-nox, or scripts/install-deps.sh)");
  }
  std::vector<const ModeResult*> ok;
  for (const auto& r : results) {
    if (r.status.ok()) ok.push_back(&r);
  }
  if (ok.empty()) return FailedPrecondition("no mode was measured: nothing to plot");
  std::ostringstream lat, p50, mem, xtics;
  for (size_t i = 0; i < ok.size(); ++i) {
    const auto& r = *ok[i];
    double x = static_cast<double>(i + 1);
    size_t n = r.latency.samples.size();
    for (size_t j = 0; j < n; ++j) {
      double jitter = n > 1 ? (static_cast<double>(j) / static_cast<double>(n - 1) - 0.5) * 0.3 : 0;
      lat << x + jitter << " " << std::max<int64_t>(1, r.latency.samples[j].total.count()) << "\n";
    }
    p50 << x << " " << std::max<int64_t>(1, r.latency.p50.count()) << " " << r.latency.p50.count() << "\n";
    mem << x << " " << r.pss_mib << "\n";
    xtics << (i ? ", " : "") << "\"" << ModeName(r.mode) << "\" " << x;
  }
  VMF_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/latency.dat", lat.str()));
  VMF_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/p50.dat", p50.str()));
  VMF_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/memory.dat", mem.str()));
  VMF_ASSIGN_OR_RETURN(std::string out_q, GnuplotString(out_png));
  std::string title = "vmfactory bench: " + machine.value("accel", std::string("?")) + ", " +
                      std::to_string(machine.value("cores", 0)) + " cores, " +
                      std::to_string(opts.config.hypervisor.vcpus) + " vCPU / " +
                      std::to_string(opts.config.hypervisor.memory_mib) + " MiB guests, " +
                      std::to_string(opts.iterations) + " samples per mode";
  std::ostringstream s;
  s << "set terminal pngcairo size 1400,560 font 'sans,11'\n"
    << "set output " << out_q << "\n"
    << "set multiplot layout 1,2 title \"" << title << "\"\n"
    << "set xtics (" << xtics.str() << ")\n"
    << "set xrange [0.4:" << ok.size() + 0.6 << "]\n"
    << "set grid ytics mytics\n"
    << "set key top right\n"
    << "set title 'Latency: request until the first command output (log scale)'\n"
    << "set logscale y\n"
    << "set ylabel 'ms'\n"
    << "plot '" << tmp
    << "/latency.dat' using 1:2 with points pt 7 ps 0.9 lc rgb '#3070b0' title 'sample', \\\n"
    << "     '" << tmp << "/p50.dat' using 1:2 with points pt 5 ps 1.6 lc rgb '#d04020' title 'p50', \\\n"
    << "     '" << tmp << "/p50.dat' using 1:2:(sprintf('%d ms', $3)) with labels left offset 3,0 notitle\n"
    << "unset logscale y\n"
    << "set title 'Memory per VM (PSS; QEMU + proxy, QEMU only for qemu-*; " << opts.concurrency_mem
    << " at once)'\n"
    << "set ylabel 'MiB'\n"
    << "set yrange [0:*]\n"
    << "set offsets 0, 0, graph 0.12, 0\n"
    << "set style fill solid 0.7 border -1\n"
    << "set boxwidth 0.6\n"
    << "plot '" << tmp << "/memory.dat' using 1:2 with boxes lc rgb '#40a060' notitle, \\\n"
    << "     '" << tmp << "/memory.dat' using 1:2:(sprintf('%.1f', $2)) with labels offset 0,0.8 notitle\n"
    << "unset multiplot\n";
  VMF_RETURN_IF_ERROR(WriteFileAtomic(tmp + "/plot.gp", s.str()));
  VMF_RETURN_IF_ERROR(
      RunTool({gnuplot, tmp + "/plot.gp"}, tmp + "/gnuplot.log", std::chrono::seconds(60)).status());
  return OkStatus();
}

// One mode, start to end; its VMs and instances are gone when it returns.
ModeResult RunMode(Mode mode, const BenchOptions& opts, const VMConfig& config, const BenchTemplate* tmpl,
                   const std::string& tmp, bool kvm, CancelToken* cancel) {
  ModeResult r{mode, OkStatus(), {}, 0, {}, json::object()};
  std::fprintf(stderr, "bench: === %s ===\n", ModeName(mode));
  auto run = [&](Source& src) -> Status {
    VMF_ASSIGN_OR_RETURN(r.latency, MeasureLatency(mode, src, opts.iterations, cancel));
    json split;
    VMF_ASSIGN_OR_RETURN(r.pss_mib,
                         MeasureMemory(mode, src, opts.concurrency_mem,
                                       uint64_t{config.hypervisor.memory_mib} << 20, &split, cancel));
    r.extra["pss_split_mib"] = split;
    VMF_ASSIGN_OR_RETURN(r.throughput, MeasureThroughput(mode, src, opts.concurrency, cancel));
    src.Describe(&r.extra);
    return OkStatus();
  };
  if (mode == Mode::kCold || mode == Mode::kTemplate) {
    FactorySource src(mode, config, tmpl, nullptr);
    r.status = run(src);
  } else if (mode == Mode::kTemplateUnconfined) {
    VMConfig unconfined = config;
    unconfined.security.confine = false;
    unconfined.limits.enabled = false;
    FactorySource src(mode, unconfined, tmpl, nullptr);
    r.status = run(src);
  } else if (mode == Mode::kRestore) {
    r.status = [&]() -> Status {
      RestoreTargetOptions ro;
      ro.target = std::max(2, opts.concurrency);
      VMF_ASSIGN_OR_RETURN(auto factory, NewTemplateFactory(config, tmpl->root(), {}, ro));
      r.extra["restore_targets"] = ro.target;
      FactorySource src(mode, config, tmpl, factory.get());
      Status st = run(src);
      // What a waiting target costs: measured with all of them waiting.
      if (st.ok()) st = WaitFull(*factory, cancel);
      if (st.ok()) {
        const FactoryState s = factory->State();
        double sum = 0;
        for (const WaitingTarget& w : s.restore->waiting) sum += static_cast<double>(w.pss_bytes) / (1 << 20);
        r.extra["waiting_target_pss_mib"] = sum / std::max<size_t>(1, s.restore->waiting.size());
        r.extra["waiting_targets_measured"] = s.restore->waiting.size();
      }
      factory->Close();
      return st;
    }();
  } else if (mode == Mode::kCache) {
    r.status = [&]() -> Status {
      VMF_ASSIGN_OR_RETURN(auto base, NewTemplateFactory(config, tmpl->root()));
      CacheOptions co;
      co.target = std::max(2, opts.concurrency);
      co.parallelism = 1;
      VMCache cache(std::move(base), co);  // closed (pool stopped) when this lambda returns
      r.extra["pool_target"] = co.target;
      r.extra["pool_refill_parallelism"] = co.parallelism;
      FactorySource src(mode, config, tmpl, &cache);
      Status st = run(src);
      cache.Close();
      return st;
    }();
  } else {
    std::string dir = tmp + "/" + ModeName(mode);
    r.status = [&]() -> Status {
      VMF_RETURN_IF_ERROR(MakeDirs(dir));
      RawQemuSource src(mode, config, dir, kvm);
      if (mode == Mode::kQemuLoadvm)
        VMF_RETURN_IF_ERROR(src.MakeSnapshot(cancel).WithContext("qemu-loadvm snapshot"));
      return run(src);
    }();
  }
  if (!r.status.ok())
    std::fprintf(stderr, "bench: %s FAILED: %s\n", ModeName(mode), r.status.ToString().c_str());
  return r;
}

// The whole bench: the private dir and the template live as long as this call.
Status Bench(const BenchOptions& opts, const std::vector<Mode>& modes, CancelToken* cancel,
             bool* mode_failed) {
  VMConfig config = opts.config;
  std::string runtime = config.runtime_dir.empty() ? DefaultRuntimeDir() : config.runtime_dir;
  VMF_ASSIGN_OR_RETURN(auto tmp, PrivateDir::Create(runtime));  // destroyed last
  std::fprintf(stderr, "bench: private dir %s\n", tmp->path().c_str());
  config.runtime_dir = tmp->path();  // every VM's runtime dir lives in it too
  const HypervisorConfig& h = config.hypervisor;
  bool kvm = QemuUsesKvm(h);
  json machine = MachineJson(config, kvm, tmp->path());
  std::fprintf(stderr, "bench: %s, %s, %s\n", machine.value("accel", std::string()).c_str(),
               machine.value("cpu_model", std::string()).c_str(),
               machine.value("qemu_version", std::string()).c_str());

  std::unique_ptr<BenchTemplate> tmpl;
  if (Has(modes, Mode::kTemplate) || Has(modes, Mode::kCache) || Has(modes, Mode::kTemplateUnconfined) ||
      Has(modes, Mode::kRestore) || Has(modes, Mode::kDaemonLoad) || Has(modes, Mode::kContainers)) {
    std::fprintf(stderr, "bench: making a private template\n");
    VMF_ASSIGN_OR_RETURN(tmpl, BenchTemplate::Create(config, tmp->path() + "/template"));
    std::fprintf(stderr, "bench: template made in %.2f s\n", Ms(tmpl->created_in()) / 1000.0);
  }
  std::vector<ModeResult> results;
  for (Mode mode : modes) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    if (mode == Mode::kDaemonLoad || mode == Mode::kContainers)
      continue;  // measured below, after the sources
    results.push_back(RunMode(mode, opts, config, tmpl.get(), tmp->path(), kvm, cancel));
    if (cancel->cancelled()) return Cancelled("interrupted");
    if (!results.back().status.ok()) *mode_failed = true;
  }
  const ModeResult* base = nullptr;
  for (const auto& r : results) {
    if (r.mode == Mode::kCold) base = &r;
  }
  if (!base && !results.empty()) base = &results.front();
  if (base && !base->status.ok()) base = nullptr;
  machine["loadavg_at_end"] = json::array();
  if (double load[3]; ::getloadavg(load, 3) == 3) machine["loadavg_at_end"] = {load[0], load[1], load[2]};

  // The same sources as a user times them: a whole `vmfactory run -- true`.
  EndToEndOptions e2e_opts{.runtime_dir = tmp->path(),
                           .template_root = tmpl ? tmpl->root() : std::string(),
                           .config_path = opts.config_path,
                           .config = config,
                           .sources = {},
                           .iterations = opts.iterations};
  if (Has(modes, Mode::kCold)) e2e_opts.sources.emplace_back("cold");
  if (Has(modes, Mode::kTemplate)) e2e_opts.sources.emplace_back("template");
  if (Has(modes, Mode::kRestore)) e2e_opts.sources.emplace_back("restore");
  if (Has(modes, Mode::kCache)) e2e_opts.sources.emplace_back("cache");
  std::vector<EndToEndResult> e2e;
  if (!e2e_opts.sources.empty()) e2e = MeasureEndToEnd(e2e_opts, cancel);
  if (cancel->cancelled()) return Cancelled("interrupted");
  for (const auto& r : e2e) {
    if (!r.status.ok()) *mode_failed = true;
  }
  std::vector<DaemonLoadResult> daemon_load;
  if (Has(modes, Mode::kDaemonLoad)) {
    daemon_load = MeasureDaemonLoad(e2e_opts, {1, 2, 4}, std::max(1, opts.iterations), cancel);
    if (cancel->cancelled()) return Cancelled("interrupted");
    for (const auto& r : daemon_load) {
      if (!r.status.ok()) *mode_failed = true;
    }
  }

  std::optional<ContainerBenchResult> containers;
  if (Has(modes, Mode::kContainers)) {
    containers = MeasureContainers(
        {.dir = tmp->path(), .template_root = tmpl->root(), .config = config, .iterations = opts.iterations},
        cancel);
    if (cancel->cancelled()) return Cancelled("interrupted");
    if (!containers->status.ok() || !containers->memory_status.ok()) *mode_failed = true;
    for (const auto& r : containers->sources) {
      if (!r.status.ok()) *mode_failed = true;
    }
  }

  PrintReport(opts, results, base, tmpl.get());
  PrintEndToEnd(e2e);
  PrintDaemonLoad(daemon_load, std::max(1, opts.iterations));
  if (containers) PrintContainers(*containers);
  Status out = OkStatus();
  if (!opts.json_path.empty()) {
    json j = ResultsJson(opts, results, base, machine, tmpl.get());
    j["end_to_end"] = EndToEndJson(e2e);
    j["daemon_load"] = DaemonLoadJson(daemon_load);
    if (containers) j["containers"] = ContainersJson(*containers);
    Status st = WriteFileAtomic(opts.json_path, j.dump(2) + "\n", 0644);
    if (st.ok()) {
      std::printf("wrote %s\n", opts.json_path.c_str());
    } else {
      out = st.WithContext("--json");
    }
  }
  if (!opts.plot_path.empty()) {
    Status st = Plot(opts.plot_path, results, machine, tmp->path(), opts);
    if (st.ok()) {
      std::printf("wrote %s\n", opts.plot_path.c_str());
    } else if (st.code() == Code::kNotFound) {
      std::printf("plot skipped: %s\n", st.message().c_str());
    } else if (out.ok()) {
      out = st.WithContext("--plot");
    }
  }
  return out;
}

}  // namespace

int RunBench(const BenchOptions& opts, CancelToken* cancel, const int* signal_seen) {
  auto modes = ParseModes(opts.modes);
  if (!modes.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", modes.status().message().c_str());
    return 2;
  }
  auto positive = [](const char* name, int v) {
    if (v >= 1) return true;
    std::fprintf(stderr, "vmfactory bench: %s must be at least 1 (got %d)\n", name, v);
    return false;
  };
  if (!positive("--iterations", opts.iterations) || !positive("--concurrency", opts.concurrency) ||
      !positive("--concurrency-mem", opts.concurrency_mem)) {
    return 2;
  }
  if (!opts.plot_path.empty() && opts.plot_path.find_first_of("'\n\r") != std::string::npos) {
    std::fprintf(stderr, "vmfactory bench: --plot path must not contain quotes or newlines\n");
    return 2;
  }
  if (Status st = opts.config.Validate(); !st.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", st.ToString().c_str());
    return 2;
  }
  bool mode_failed = false;
  Status st = Bench(opts, *modes, cancel, &mode_failed);
  // Every VM, QEMU, the template and the private dir are gone by now (RAII).
  if (cancel->cancelled()) {
    std::fprintf(stderr, "vmfactory bench: interrupted; VMs stopped, private dir and template removed\n");
    return *signal_seen ? 128 + *signal_seen : 130;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", st.ToString().c_str());
    return 1;
  }
  return mode_failed ? 1 : 0;
}

}  // namespace vmf
