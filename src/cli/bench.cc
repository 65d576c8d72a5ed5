#include "cli/bench.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/scoped_dir.h"
#include "factory/factory.h"
#include "factory/template.h"
#include "vm/vm.h"

namespace vmf {
namespace {

// Generous bounds for guest calls under TCG on a busy machine; they only
// keep a wedged guest from hanging the bench, they are not measured against.
constexpr Duration kGuestCallTimeout = std::chrono::seconds(60);

// The targets.
constexpr double kTargetSpeedup = 10.0;      // template p50 at least 10x faster than cold
constexpr double kTargetMemoryRatio = 0.30;  // clone PSS at most 30% of cold

enum class Mode { kCold, kTemplate };

const char* ModeName(Mode m) { return m == Mode::kCold ? "cold" : "template"; }

double Ms(Duration d) { return static_cast<double>(d.count()); }
Duration Since(Clock::time_point t) { return std::chrono::duration_cast<Duration>(Clock::now() - t); }

// Modes in the order given, each once; an unknown name is an error naming it.
Result<std::vector<Mode>> ParseModes(const std::vector<std::string>& names) {
  std::vector<Mode> modes;
  for (const auto& name : names) {
    Mode m;
    if (name == "cold") {
      m = Mode::kCold;
    } else if (name == "template") {
      m = Mode::kTemplate;
    } else {
      return InvalidArgument("unknown mode \"" + name + "\" (known modes: cold, template)");
    }
    if (std::find(modes.begin(), modes.end(), m) == modes.end()) modes.push_back(m);
  }
  if (modes.empty()) return InvalidArgument("--modes names no mode (known modes: cold, template)");
  return modes;
}

// The bench's own template, in a private temp dir under the runtime dir.
// Removed (with DestroyTemplate) when this goes away, however that happens:
// the user's template is never looked at.
class BenchTemplate {
 public:
  static Result<std::unique_ptr<BenchTemplate>> Create(const VMConfig& config) {
    std::string runtime = config.runtime_dir.empty() ? DefaultRuntimeDir() : config.runtime_dir;
    VMF_RETURN_IF_ERROR(MakeDirs(runtime));
    std::string pattern = runtime + "/bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + pattern);  // 0700
    std::unique_ptr<BenchTemplate> t(new BenchTemplate(pattern));

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

// One VM from the mode's source.
Result<std::unique_ptr<VM>> GetVM(Mode mode, const VMConfig& config, const BenchTemplate* tmpl,
                                  StepTimes* steps, CancelToken* cancel) {
  if (mode == Mode::kCold) return VM::Create(config, steps, cancel);
  return CloneFromTemplate(tmpl->info(), config, steps, cancel);
}

// Runs args in the VM to completion; returns the first stdout chunk (empty
// if `want_output` is false). The exit status must be 0.
Result<std::string> Exec(VM& vm, const std::string& exec_id, std::vector<std::string> args, bool want_output,
                         Clock::time_point* first_output_at) {
  ExecSpec spec;
  spec.exec_id = exec_id;
  spec.args = std::move(args);
  VMF_RETURN_IF_ERROR(vm.agent().ExecProcess(spec).WithContext("exec " + spec.args[0]));
  std::string out;
  if (want_output) {
    while (out.empty()) {
      VMF_ASSIGN_OR_RETURN(std::string data, vm.agent().ReadStdout(exec_id, Deadline(kGuestCallTimeout)));
      if (data.empty()) return Internal(spec.args[0] + " ended without any output");
      out = std::move(data);
    }
    if (first_output_at) *first_output_at = Clock::now();
  }
  VMF_ASSIGN_OR_RETURN(int code, vm.agent().WaitProcess(exec_id, Deadline(kGuestCallTimeout)));
  if (code != 0) return Internal(spec.args[0] + " exited with status " + std::to_string(code));
  return out;
}

// ---- latency ----

struct Sample {
  Duration total{0};
  StepTimes steps;  // Create's (and the clone's) steps, then "exec to first output"
};

struct LatencyStats {
  std::vector<Sample> samples;
  Duration p50{0}, p95{0}, max{0};
  // Mean per step, in the order the steps first appeared.
  std::vector<std::pair<std::string, double>> step_means_ms;
};

// Nearest rank: the smallest value with at least p% of the samples at or below it.
Duration Percentile(std::vector<Duration> sorted, double p) {
  std::sort(sorted.begin(), sorted.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// One iteration: time from asking for a VM to the first output of `echo ready`.
Result<Sample> MeasureOnce(Mode mode, const VMConfig& config, const BenchTemplate* tmpl, int i,
                           CancelToken* cancel) {
  Sample s;
  auto t0 = Clock::now();
  VMF_ASSIGN_OR_RETURN(std::unique_ptr<VM> vm, GetVM(mode, config, tmpl, &s.steps, cancel));
  auto exec_at = Clock::now();
  Clock::time_point first_output_at{};
  std::string exec_id = std::string("bench-") + ModeName(mode) + "-" + std::to_string(i);
  // Exec waits for the exit after the first output; t1 is the first output.
  VMF_ASSIGN_OR_RETURN(std::string out, Exec(*vm, exec_id, {"echo", "ready"}, true, &first_output_at));
  if (out.rfind("ready", 0) != 0) return Internal("echo ready printed \"" + out + "\"");
  s.total = std::chrono::duration_cast<Duration>(first_output_at - t0);
  s.steps.emplace_back("exec to first output",
                       std::chrono::duration_cast<Duration>(first_output_at - exec_at));
  Status st = vm->Stop();
  if (!st.ok()) std::fprintf(stderr, "bench: stopping the VM: %s\n", st.ToString().c_str());
  return s;
}

Result<LatencyStats> MeasureLatency(Mode mode, const VMConfig& config, const BenchTemplate* tmpl,
                                    int iterations, CancelToken* cancel) {
  LatencyStats stats;
  for (int i = 1; i <= iterations; ++i) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    VMF_ASSIGN_OR_RETURN(Sample s, MeasureOnce(mode, config, tmpl, i, cancel));
    std::fprintf(stderr, "bench: %s %d/%d %lld ms\n", ModeName(mode), i, iterations,
                 static_cast<long long>(s.total.count()));
    stats.samples.push_back(std::move(s));
  }
  std::vector<Duration> totals;
  for (const auto& s : stats.samples) totals.push_back(s.total);
  stats.p50 = Percentile(totals, 50);
  stats.p95 = Percentile(totals, 95);
  stats.max = *std::max_element(totals.begin(), totals.end());

  std::vector<std::pair<std::string, std::vector<Duration>>> by_step;
  for (const auto& s : stats.samples) {
    for (const auto& [name, d] : s.steps) {
      auto it = std::find_if(by_step.begin(), by_step.end(), [&](const auto& e) { return e.first == name; });
      if (it == by_step.end()) it = by_step.insert(by_step.end(), {name, {}});
      it->second.push_back(d);
    }
  }
  for (const auto& [name, ds] : by_step) {
    double sum = 0;
    for (Duration d : ds) sum += Ms(d);
    stats.step_means_ms.emplace_back(name, sum / static_cast<double>(ds.size()));
  }
  return stats;
}

// ---- memory ----

// The "Pss:" line of /proc/PID/smaps_rollup, in kB.
Result<uint64_t> ReadPssKb(pid_t pid) {
  if (pid <= 0) return FailedPrecondition("no such process (pid " + std::to_string(pid) + ")");
  std::string path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, "open " + path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) != 0) continue;
    std::istringstream fields(line.substr(4));
    uint64_t kb = 0;
    if (fields >> kb) return kb;
    return DataLoss("cannot parse \"" + line + "\" in " + path);
  }
  return NotFound("no Pss: line in " + path);
}

// Starts k VMs (one after the other), runs `true` in each, then sums the PSS
// of each VM's QEMU and proxy; returns the mean per VM in MiB. The VMs are
// stopped when this returns, on every path.
Result<double> MeasureMemory(Mode mode, const VMConfig& config, const BenchTemplate* tmpl, int k,
                             CancelToken* cancel) {
  std::vector<std::unique_ptr<VM>> vms;
  for (int i = 1; i <= k; ++i) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    VMF_ASSIGN_OR_RETURN(std::unique_ptr<VM> vm, GetVM(mode, config, tmpl, nullptr, cancel));
    std::string exec_id = std::string("bench-mem-") + ModeName(mode) + "-" + std::to_string(i);
    VMF_RETURN_IF_ERROR(Exec(*vm, exec_id, {"true"}, false, nullptr).status());
    std::fprintf(stderr, "bench: %s memory: VM %d/%d running\n", ModeName(mode), i, k);
    vms.push_back(std::move(vm));
  }
  uint64_t total_kb = 0;
  for (auto& vm : vms) {
    VMF_ASSIGN_OR_RETURN(uint64_t qemu_kb, ReadPssKb(vm->qemu_pid()));
    VMF_ASSIGN_OR_RETURN(uint64_t proxy_kb, ReadPssKb(vm->proxy_pid()));
    total_kb += qemu_kb + proxy_kb;
  }
  double mean_mib = static_cast<double>(total_kb) / static_cast<double>(vms.size()) / 1024.0;
  std::fprintf(stderr, "bench: %s memory: %.1f MiB PSS per VM (%d at once); stopping them\n", ModeName(mode),
               mean_mib, k);
  for (auto& vm : vms) {
    Status st = vm->Stop();
    if (!st.ok()) std::fprintf(stderr, "bench: stopping a VM: %s\n", st.ToString().c_str());
  }
  return mean_mib;
}

// ---- report ----

struct ModeResult {
  Mode mode;
  LatencyStats latency;
  double pss_mib = 0;
};

const ModeResult* Find(const std::vector<ModeResult>& results, Mode m) {
  for (const auto& r : results) {
    if (r.mode == m) return &r;
  }
  return nullptr;
}

void PrintReport(const std::vector<ModeResult>& results, const BenchTemplate* tmpl, int k) {
  if (tmpl) {
    std::printf("template: made in %.2f s (%u vCPUs, %u MiB), private to this run\n",
                std::chrono::duration<double>(tmpl->created_in()).count(), tmpl->info().hypervisor.vcpus,
                tmpl->info().hypervisor.memory_mib);
  }
  for (const auto& r : results) {
    std::printf("%s steps (mean ms):\n", ModeName(r.mode));
    for (const auto& [name, ms] : r.latency.step_means_ms) std::printf("  %-28s %8.1f\n", name.c_str(), ms);
  }
  std::printf("\n%-10s %-4s %7s %7s %7s  %s\n", "mode", "n", "p50 ms", "p95 ms", "max ms", "PSS/VM MiB");
  for (const auto& r : results) {
    std::printf("%-10s %-4zu %7lld %7lld %7lld  %.1f\n", ModeName(r.mode), r.latency.samples.size(),
                static_cast<long long>(r.latency.p50.count()), static_cast<long long>(r.latency.p95.count()),
                static_cast<long long>(r.latency.max.count()), r.pss_mib);
  }
  std::printf("(PSS: QEMU + proxy, mean over %d VMs alive at once)\n", k);

  const ModeResult* cold = Find(results, Mode::kCold);
  const ModeResult* clone = Find(results, Mode::kTemplate);
  if (!cold || !clone) return;
  double latency_ratio = Ms(clone->latency.p50) / std::max(1.0, Ms(cold->latency.p50));
  double speedup = Ms(cold->latency.p50) / std::max(1.0, Ms(clone->latency.p50));
  double memory_ratio = clone->pss_mib / std::max(1e-9, cold->pss_mib);
  std::printf("template/cold: latency %.3f (%.1fx faster), memory %.3f\n", latency_ratio, speedup,
              memory_ratio);
  std::printf("target: template p50 >= %.0fx faster than cold: %s (%.1fx)\n", kTargetSpeedup,
              speedup >= kTargetSpeedup ? "met" : "NOT met", speedup);
  std::printf("target: clone PSS <= %.0f%% of cold: %s (%.1f%%)\n", kTargetMemoryRatio * 100,
              memory_ratio <= kTargetMemoryRatio ? "met" : "NOT met", memory_ratio * 100);
}

// The whole bench; the template (if any) lives as long as this call.
Status Bench(const BenchOptions& opts, const std::vector<Mode>& modes, CancelToken* cancel) {
  std::unique_ptr<BenchTemplate> tmpl;
  if (std::find(modes.begin(), modes.end(), Mode::kTemplate) != modes.end()) {
    std::fprintf(stderr, "bench: making a private template\n");
    VMF_ASSIGN_OR_RETURN(tmpl, BenchTemplate::Create(opts.config));
    std::fprintf(stderr, "bench: template made in %.2f s at %s\n",
                 std::chrono::duration<double>(tmpl->created_in()).count(), tmpl->root().c_str());
  }
  std::vector<ModeResult> results;
  for (Mode mode : modes) {
    if (cancel->cancelled()) return Cancelled("interrupted");
    ModeResult r{mode, {}, 0};
    VMF_ASSIGN_OR_RETURN(r.latency, MeasureLatency(mode, opts.config, tmpl.get(), opts.iterations, cancel));
    VMF_ASSIGN_OR_RETURN(r.pss_mib,
                         MeasureMemory(mode, opts.config, tmpl.get(), opts.concurrency_mem, cancel));
    results.push_back(std::move(r));
  }
  PrintReport(results, tmpl.get(), opts.concurrency_mem);
  return OkStatus();
}

}  // namespace

int RunBench(const BenchOptions& opts, CancelToken* cancel, const int* signal_seen) {
  auto modes = ParseModes(opts.modes);
  if (!modes.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", modes.status().message().c_str());
    return 2;
  }
  if (opts.iterations < 1) {
    std::fprintf(stderr, "vmfactory bench: --iterations must be at least 1 (got %d)\n", opts.iterations);
    return 2;
  }
  if (opts.concurrency_mem < 1) {
    std::fprintf(stderr, "vmfactory bench: --concurrency-mem must be at least 1 (got %d)\n",
                 opts.concurrency_mem);
    return 2;
  }
  if (Status st = opts.config.Validate(); !st.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", st.ToString().c_str());
    return 2;
  }
  Status st = Bench(opts, *modes, cancel);
  // Every VM and the template are gone by now (RAII), whatever happened.
  if (cancel->cancelled()) {
    std::fprintf(stderr, "vmfactory bench: interrupted; VMs stopped and the bench template removed\n");
    return *signal_seen ? 128 + *signal_seen : 130;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "vmfactory bench: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace vmf
