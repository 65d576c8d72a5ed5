#include "vm/exec.h"

#include <atomic>
#include <thread>

namespace vmf {

Result<CommandResult> ExecAndCollect(AgentClient& agent, const std::vector<std::string>& args,
                                     const CollectOptions& options) {
  static std::atomic<uint64_t> seq{0};
  const std::string id = "c" + std::to_string(++seq);
  ExecSpec spec;
  spec.exec_id = id;
  spec.args = args;
  VMF_RETURN_IF_ERROR(agent.ExecProcess(spec));
  CommandResult r;
  Deadline deadline(options.timeout);
  Status out_st, err_st;
  auto pump = [&](bool is_err, std::string* dst, Status* st) {
    for (;;) {
      auto d = is_err ? agent.ReadStderr(id, deadline) : agent.ReadStdout(id, deadline);
      if (!d.ok()) {
        *st = d.status();
        return;
      }
      if (d->empty()) return;
      if (dst->size() + d->size() > options.max_output) {
        *st = ResourceExhausted(std::string(is_err ? "stderr" : "stdout") + " of '" + args[0] + "' is over " +
                                std::to_string(options.max_output) + " bytes");
        return;
      }
      dst->append(*d);
    }
  };
  std::jthread out([&] { pump(false, &r.out, &out_st); });
  std::jthread err([&] { pump(true, &r.err, &err_st); });
  Status in_st;
  size_t off = 0;
  const std::string& in = options.stdin_data;
  while (off < in.size() && in_st.ok()) {
    auto n = agent.WriteStdin(id, in.substr(off, 256 * 1024));
    if (!n.ok()) {
      in_st = n.status();
    } else {
      off += *n;
      if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (in_st.ok()) in_st = agent.CloseStdin(id);
  auto code = agent.WaitProcess(id, deadline);
  out.join();
  err.join();
  VMF_RETURN_IF_ERROR(in_st);
  VMF_RETURN_IF_ERROR(out_st);
  VMF_RETURN_IF_ERROR(err_st);
  if (!code.ok()) return code.status();
  r.exit_code = *code;
  return r;
}

}  // namespace vmf
