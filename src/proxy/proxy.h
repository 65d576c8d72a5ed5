// Proxy: the owner of a VM's single agent channel.
//
// QEMU's virtio-serial chardev accepts one host client, and the guest port
// can be opened once, so exactly one process may speak to the agent. The
// proxy is that process: it listens on a unix socket of its own, accepts any
// number of ttrpc clients, gives each request a fresh stream id on the
// channel and routes the reply back to the client that asked. It also reads
// the guest's serial console and logs it, line by line, with the VM id.
//
// Resynchronisation: the channel is a byte stream with no connection
// semantics, so on connect the proxy sends a Health.Check carrying
// metadata "vmf-sync" on a random odd stream id S and discards every byte
// until a response frame for S appears; it then numbers requests S+2, S+4...
// A reply for an id that is not pending is dropped. The guest agent drops a
// half frame after one second of silence, so the sync is re-sent every 1.5 s.
//
// The proxy exits when the agent channel closes (QEMU has gone) or on
// SIGTERM/SIGINT, removing its socket.
#pragma once

#include <cstdint>
#include <string>

#include "common/clock.h"
#include "common/status.h"

namespace vmf {

struct ProxyOptions {
  std::string vm_id;
  std::string agent_socket;    // QEMU's virtio-serial chardev (QEMU is the server)
  std::string console_socket;  // QEMU's serial chardev; empty: no console
  std::string listen_socket;   // where clients connect
  std::string log_file;        // console and proxy log; empty: stderr
  Duration connect_timeout = std::chrono::seconds(30);
  int ready_fd = -1;  // written "ready\n" once listening, then closed
};

// The resync request that opens every session on an agent channel: a
// grpc.Health/Check carrying metadata "vmf-sync", framed on stream_id.
std::string SyncRequestFrame(uint32_t stream_id);

// Runs the proxy until the channel closes or a stop signal; blocks.
Status RunProxy(const ProxyOptions& opts);

}  // namespace vmf
