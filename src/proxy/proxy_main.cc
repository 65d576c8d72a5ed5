// vmfactory-proxy: owns one VM's agent channel and console; see proxy/proxy.h.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "proxy/proxy.h"
#include "proxy/syscall_filter.h"

int main(int argc, char** argv) {
  vmf::ProxyOptions opts;
  CLI::App app{"vmfactory-proxy: multiplexes ttrpc clients over a VM's agent channel"};
  app.add_option("--vm-id", opts.vm_id, "VM id (logged on every line)")->required();
  app.add_option("--agent-socket", opts.agent_socket, "QEMU's agent chardev socket")->required();
  app.add_option("--console-socket", opts.console_socket, "QEMU's serial console socket");
  app.add_option("--listen", opts.listen_socket, "unix socket to serve clients on")->required();
  app.add_option("--log-file", opts.log_file, "log file (console and proxy); default stderr");
  app.add_option("--ready-fd", opts.ready_fd, "fd to write 'ready' to once listening");
  int connect_timeout_ms = 30000;
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "how long to wait for QEMU's sockets");
  int frame_timeout_ms = 5000;
  app.add_option(
      "--frame-timeout-ms", frame_timeout_ms,
      "longest silence of the agent in the middle of a frame before the channel is resynchronised");
  CLI11_PARSE(app, argc, argv);
  opts.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  opts.frame_timeout = std::chrono::milliseconds(frame_timeout_ms);
  // Before any input is read: a guest that subverts the proxy gets nothing
  // it could not already do with the proxy's sockets.
  vmf::Status st = vmf::InstallProxySyscallFilter();
  if (st.ok()) st = vmf::RunProxy(opts);
  if (!st.ok()) {
    std::fprintf(stderr, "vmfactory-proxy: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
