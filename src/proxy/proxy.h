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
// A late reply for an id whose client has gone is dropped. The guest agent
// drops a half frame after one second of silence, so the sync is re-sent
// every 1.5 s.
//
// The guest is untrusted. After the sync, every frame from the agent must be
// a well-formed ttrpc.Response (at most 4 MiB) for a stream this proxy
// opened, or one of the replies owed to its sync requests; before it, at
// most 8 MiB may arrive without the sync reply.
// Anything else is a protocol violation: the proxy quarantines the channel.
// Every pending call fails at once (DATA_LOSS, or RESOURCE_EXHAUSTED for the
// call whose reply was oversized), every later call fails at once with
// DATA_LOSS "agent protocol violation: ...; the VM's agent channel is
// quarantined", and the channel is no longer decoded, only read slowly to
// notice QEMU's exit (a guest that floods it stalls).
//
// A frame begun and not finished after frame_timeout of silence is not a
// violation (a paused VM or a starved QEMU looks the same): the pending calls
// fail with UNAVAILABLE, the partial frame is dropped and the channel is
// synchronised again with a new sync id.
//
// The console is logged line by line (control characters as '?', lines cut
// at 4 KiB) into a log that rotates at 1 MiB (2 MiB on disk at most). It is
// read at up to 16 KiB/s after a 128 KiB burst: beyond that the proxy reads
// it no faster, so a guest flooding its console waits on its own serial port
// instead of costing the host CPU and disk.
//
// The proxy exits when the agent channel closes (QEMU has gone) or on
// SIGTERM/SIGINT, removing its socket.
#pragma once

#include <cstdint>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "ttrpc/sync.h"

namespace vmf {

struct ProxyOptions {
  std::string vm_id;
  std::string agent_socket;    // QEMU's virtio-serial chardev (QEMU is the server)
  std::string console_socket;  // QEMU's serial chardev; empty: no console
  std::string listen_socket;   // where clients connect
  std::string log_file;        // console and proxy log; empty: stderr
  Duration connect_timeout = std::chrono::seconds(30);
  // Longest silence allowed in the middle of a frame from the agent; then the
  // pending calls fail and the channel is synchronised again.
  Duration frame_timeout = std::chrono::seconds(5);
  int ready_fd = -1;  // written "ready\n" once listening, then closed
};

// The resync request that opens every session on an agent channel now lives
// in ttrpc/sync.h; this keeps vmf::SyncRequestFrame working for its callers.
using ttrpc::SyncRequestFrame;

// Runs the proxy until the channel closes or a stop signal; blocks.
Status RunProxy(const ProxyOptions& opts);

}  // namespace vmf
