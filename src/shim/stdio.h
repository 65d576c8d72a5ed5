// ProcessIo: a container process's stdio between containerd and the guest.
//
// containerd hands the shim paths (FIFOs it created and opened first, a
// file:// URI, or "" for none). Output: the guest's stdout and stderr are
// read from the agent until EOF and written to their FIFOs, which are
// opened O_RDWR so that the open never blocks and a reader that reconnects
// finds them still there; with no path the output is read and dropped (the
// agent's buffer would otherwise fill and stop the process). Input: the
// stdin FIFO is read (opened non-blocking) and forwarded; its EOF, or
// CloseIO, ends it with the agent's CloseStdin once what was read is
// forwarded (ctr calls CloseIO before it closes its end).
//
// Exit order (what ctr needs to lose nothing): WaitOutput() returns once
// both outputs reached EOF and their FIFOs are closed; only then is the
// exit reported.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.h"
#include "common/status.h"
#include "vm/agent_client.h"

namespace vmf::shim {

struct StdioPaths {
  std::string in, out, err;
  bool terminal = false;
};

class ProcessIo {
 public:
  // Opens the paths (INVALID_ARGUMENT for a URI scheme other than file://).
  static Result<std::unique_ptr<ProcessIo>> Open(const StdioPaths& paths);
  ~ProcessIo();
  ProcessIo(const ProcessIo&) = delete;
  ProcessIo& operator=(const ProcessIo&) = delete;

  // Starts copying for the guest process `proc` (once it has started).
  void Start(AgentClient* agent, const ProcId& proc);
  // Ends stdin once what is pending is forwarded (CloseIO).
  void CloseStdin() { close_stdin_ = true; }
  // Waits until both outputs reached EOF, then closes the output FIFOs.
  void WaitOutput();
  // Stops everything (the VM is gone or the process is deleted).
  void Stop();

 private:
  ProcessIo() = default;
  void PumpOut(bool err);
  void PumpIn();

  StdioPaths paths_;
  UniqueFd in_, out_, err_;
  AgentClient* agent_ = nullptr;
  std::unique_ptr<ProcId> proc_;
  std::atomic<bool> close_stdin_{false};
  std::atomic<bool> stop_{false};
  std::thread out_thread_, err_thread_, in_thread_;
};

}  // namespace vmf::shim
