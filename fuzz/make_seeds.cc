// Writes the generated seed corpora of the fuzz targets:
//
//   cmake --build build --target fuzz_make_seeds && build/bin/fuzz_make_seeds fuzz/corpus
//
// Every file it writes is named seed-*; it overwrites those and leaves the
// others (crash-*, timeout-*, leak-*: regression inputs) alone. Each seed is
// small and meaningful: well-formed traffic of each kind, plus the edge cases
// each parser is meant to reject. See fuzz/README.md for the input formats.
#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "agent.pb.h"
#include "factory.pb.h"
#include "health.pb.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/sync.h"

namespace {

namespace fs = std::filesystem;
using vmf::ttrpc::EncodeFrame;
using vmf::ttrpc::kTypeData;
using vmf::ttrpc::kTypeRequest;
using vmf::ttrpc::kTypeResponse;

fs::path g_root;
int g_written = 0;

void Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_root / dir);
  std::ofstream f(g_root / dir / ("seed-" + name), std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
  ++g_written;
}

std::string Byte(uint8_t b) { return std::string(1, static_cast<char>(b)); }

// A header announcing `len` bytes, without the payload.
std::string Header(uint32_t len, uint32_t id, uint8_t type, uint8_t flags = 0) {
  std::string h = EncodeFrame(id, type, flags, "");
  h[0] = static_cast<char>(len >> 24);
  h[1] = static_cast<char>(len >> 16);
  h[2] = static_cast<char>(len >> 8);
  h[3] = static_cast<char>(len);
  return h;
}

std::string Ok(const google::protobuf::MessageLite& m) {
  ::ttrpc::Response r;
  r.set_payload(m.SerializeAsString());
  return r.SerializeAsString();
}

std::string Err(int code, const std::string& message) {
  ::ttrpc::Response r;
  r.mutable_status()->set_code(code);
  r.mutable_status()->set_message(message);
  return r.SerializeAsString();
}

std::string Req(const std::string& service, const std::string& method, const google::protobuf::MessageLite& m,
                bool sync = false) {
  ::ttrpc::Request r;
  r.set_service(service);
  r.set_method(method);
  r.set_payload(m.SerializeAsString());
  r.set_timeout_nano(30'000'000'000);
  if (sync) {
    auto* kv = r.add_metadata();
    kv->set_key(vmf::ttrpc::kSyncMetadataKey);
    kv->set_value("0123456789abcdef");
  }
  return r.SerializeAsString();
}

std::string Resp(uint32_t id, const std::string& payload) {
  return EncodeFrame(id, kTypeResponse, 0, payload);
}
std::string Call(uint32_t id, const std::string& payload) {
  return EncodeFrame(id, kTypeRequest, 0, payload);
}

// ------------------------------------------------------------ ttrpc_frame

void TtrpcFrameSeeds() {
  const std::string d = "ttrpc_frame";
  grpc::HealthCheckResponse serving;
  serving.set_status(grpc::HealthCheckResponse::SERVING);
  grpc::VersionCheckResponse version;
  version.set_grpc_version("ttrpc");
  version.set_agent_version("0.1.0");
  grpc::WaitProcessResponse wait;
  wait.set_status(3);
  grpc::WriteStreamResponse write;
  write.set_len(4096);
  grpc::ReadStreamResponse read;
  read.set_data("hi\n");
  grpc::GuestDetailsResponse details;
  details.set_mem_block_size_bytes(128 << 20);
  details.mutable_agent_details()->set_version("0.1.0");
  details.mutable_agent_details()->set_init_daemon(true);
  details.set_support_mem_hotplug_probe(true);
  vmfactory::v1::VM vm;
  vm.set_id("a1b2c3");
  vm.set_control_endpoint("/run/vmfactory/vm/a1b2c3/qmp.sock");
  vm.set_proxy_url("unix:///run/vmfactory/vm/a1b2c3/proxy.sock");
  vm.set_vmm_pid(4242);
  vm.set_proxy_pid(4243);
  vm.set_cpus(2);
  vm.set_memory_mib(512);
  vm.set_source("cache");
  vmfactory::v1::StatusResponse status;
  status.set_daemon_pid(100);
  status.set_base_source("template");
  status.set_target(2);
  status.add_ready()->set_id("r1");
  status.add_handed_out()->set_owner_pid(7);

  Write(d, "health-serving", Byte(0) + Resp(1, Ok(serving)));
  Write(d, "version", Byte(0) + Resp(3, Ok(version)));
  Write(d, "wait-status", Byte(0) + Resp(5, Ok(wait)));
  Write(d, "write-len", Byte(0) + Resp(7, Ok(write)));
  Write(d, "read-data", Byte(0) + Resp(9, Ok(read)));
  Write(d, "read-eof", Byte(0) + Resp(11, Ok(grpc::ReadStreamResponse())));
  Write(d, "guest-details", Byte(0) + Resp(13, Ok(details)));
  Write(d, "empty-ok", Byte(0) + Resp(15, Ok(grpc::Empty())));
  Write(d, "no-payload", Byte(0) + Resp(17, ""));
  Write(d, "error-not-found", Byte(0) + Resp(19, Err(5, "no process c1/e1")));
  Write(d, "error-code-out-of-range", Byte(0) + Resp(21, Err(99, "odd code")));
  Write(d, "error-negative-code", Byte(0) + Resp(23, Err(-4, "negative")));
  Write(d, "error-long-message", Byte(0) + Resp(25, Err(13, std::string(1500, 'x'))));
  Write(d, "daemon-vm", Byte(0) + Resp(27, Ok(vm)));
  Write(d, "daemon-status", Byte(0) + Resp(29, Ok(status)));
  Write(d, "data-frame", Byte(0) + EncodeFrame(31, kTypeData, vmf::ttrpc::kFlagNoData, ""));
  Write(d, "oversized-then-frame",
        Byte(0) + Header(5u << 20, 33, kTypeResponse) + "skipped bytes" + Resp(35, Ok(serving)));
  Write(d, "max-length-header", Byte(0) + Header(vmf::ttrpc::kMaxPayload, 37, kTypeResponse) + "partial");
  Write(d, "length-ffffffff", Byte(0) + Header(0xffffffffu, 39, kTypeResponse));
  Write(d, "half-header", Byte(0) + Resp(41, Ok(serving)).substr(0, 6));
  std::string many =
      Resp(1, Ok(serving)) + Resp(3, Ok(read)) + Resp(5, Err(14, "closed")) + Resp(7, Ok(wait));
  Write(d, "many-chunks-1", Byte(8) + many);   // one-byte pieces
  Write(d, "many-chunks-16", Byte(4) + many);  // 1..16-byte pieces
  Write(d, "many-chunks-128", Byte(7) + many);
  Write(d, "garbage", Byte(0) + std::string("\x00\x00\x00\x03\x00\x00\x00\x01\x02\x00\xff\xff\xff", 13));
}

// ------------------------------------------------------------ qmp

void QmpSeeds() {
  const std::string d = "qmp";
  const std::string big = Byte(0) + Byte(0xff);  // whole, 1 MiB lines
  const std::string small = Byte(3) + Byte(2);   // 1..8-byte pieces, 64-byte lines
  const std::string greeting =
      "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 2, \"major\": 7}, \"package\": "
      "\"Debian 1:7.2+dfsg-7\"}, \"capabilities\": [\"oob\"]}}\r\n";
  Write(d, "greeting", big + greeting);
  Write(d, "handshake", big + greeting + "{\"return\": {}, \"id\": 1}\r\n");
  Write(d, "query-status",
        big +
            "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, "
            "\"id\": 2}\r\n");
  Write(d, "error-reply",
        big +
            "{\"id\": 3, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device "
            "'cpu9' not found\"}}\r\n");
  Write(d, "error-command-not-found",
        big +
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x has not been found\"}, "
            "\"id\": 4}\n");
  Write(d, "error-without-id",
        big + "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n");
  Write(d, "error-not-object",
        big + "{\"error\": \"oops\", \"id\": 5}\n{\"error\": {\"class\": 7}, \"id\": 6}\n");
  Write(d, "events",
        big +
            "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 1234}, \"event\": \"STOP\"}\r\n"
            "{\"timestamp\": {\"seconds\": 1700000001, \"microseconds\": 5}, \"event\": \"RESUME\"}\r\n"
            "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\n");
  Write(d, "migration-event", big + "{\"event\": \"MIGRATION\", \"data\": {\"status\": \"completed\"}}\n");
  Write(d, "foreign-ids",
        big +
            "{\"return\": {}, \"id\": \"abc\"}\n{\"return\": {}, \"id\": -1}\n"
            "{\"return\": {}, \"id\": 1.5}\n{\"return\": {}, \"id\": 18446744073709551615}\n");
  Write(d, "bad-greeting", big + "{\"QMP\": 1}\n");
  Write(d, "not-objects", big + "[1,2,3]\n\"str\"\n42\nnull\n{}\n{\"other\": true}\n");
  Write(d, "garbage-lines", big + "not json\n{\"a\":\n\x01\x02\xff\n   \r\n\n{\"return\": {}, \"id\": 9}\n");
  Write(d, "deep-nesting",
        big + std::string(200, '[') + std::string(200, ']') + "\n" + std::string(100, '{') + "\n");
  Write(d, "brackets-in-strings", big + "{\"return\": \"[[[[{{{{\\\"]]]\", \"id\": 10}\n");
  Write(d, "unicode", big + "{\"return\": {\"s\": \"\\u00e9\\ud83d\\ude00 \\u0000\"}, \"id\": 11}\n");
  Write(d, "long-line-small-limit",
        small + greeting + "{\"return\": {\"x\": \"" + std::string(100, 'y') +
            "\"}, \"id\": 12}\r\n{\"return\": {}, \"id\": 13}\n");
  Write(d, "pieces-crlf", Byte(9) + Byte(0xff) + greeting + "{\"return\": {}, \"id\": 1}\r\n");
  Write(d, "no-final-newline", big + greeting + "{\"return\": {}, \"id\": 2}");
}

// ------------------------------------------------------------ config

void ConfigSeeds() {
  const std::string d = "config";
  Write(d, "empty.toml", "");
  Write(d, "full.toml", R"([hypervisor.qemu]
path = "sh"
kernel = "/etc/passwd"
initrd = "/etc/passwd"
machine_type = "q35"
kernel_params = "quiet"
default_vcpus = 1
default_maxvcpus = 4
default_memory = 256        # MiB
memory_slots = 4
default_maxmemory = 2048    # MiB
accel = "tcg"

[agent]
boot_timeout = 90
call_timeout = 30

[factory]
enable_template = true
template_path = "/run/vmfactory/template"
vm_cache_number = 2
vm_cache_endpoint = "/run/vmfactory/daemon.sock"
vm_cache_parallelism = 1

[metrics]
address = "127.0.0.1:9464"

[runtime]
dir = "/run/vmfactory"
)");
  Write(d, "pool.toml",
        "[factory]\nvm_cache_number = 4\nvm_cache_parallelism = 2\nenable_template = false\n");
  Write(d, "metrics-ipv6.toml", "[metrics]\naddress = \"[::1]:9464\"\n");
  Write(d, "metrics-off.toml", "[metrics]\naddress = \"\"\n");
  Write(d, "dotted-keys.toml", "hypervisor.qemu.default_vcpus = 2\nagent.call_timeout = 5\n");
  Write(d, "inline-table.toml", "hypervisor = { qemu = { default_memory = 512, machine_type = \"pc\" } }\n");
  Write(d, "big-vm.toml", "[hypervisor.qemu]\ndefault_vcpus = 8\ndefault_memory = 4096\n");
  Write(d, "max-below-base.toml", "[hypervisor.qemu]\ndefault_vcpus = 8\ndefault_maxvcpus = 2\n");
  Write(d, "unknown-key.toml", "[factory]\nvm_cache_numbr = 2\n");
  Write(d, "unknown-table.toml", "[hypervisor.firecracker]\npath = \"fc\"\n");
  Write(d, "bad-types.toml",
        "[agent]\nboot_timeout = \"90\"\ncall_timeout = 1.5\n[factory]\nenable_template = 1\n");
  Write(d, "out-of-range.toml",
        "[factory]\nvm_cache_number = -1\n[hypervisor.qemu]\ndefault_memory = 9999999999\n");
  Write(d, "relative-paths.toml",
        "[hypervisor.qemu]\npath = \"bin/qemu\"\nkernel = \"vmlinuz\"\n[runtime]\ndir = \"run\"\n");
  Write(d, "control-chars.toml",
        "[hypervisor.qemu]\nkernel_params = \"a\\nb\"\n[runtime]\ndir = \"/x\\u0000y\"\n");
  Write(d, "quoted-keys.toml", "[\"hypervisor\".\"qemu\"]\n\"odd key\\u0001\" = 1\n");
  Write(d, "arrays.toml", "[[hypervisor]]\nqemu = 1\n[agent]\nboot_timeout = [1, [2, [3]]]\n");
  Write(d, "long-endpoint.toml", "[factory]\nvm_cache_endpoint = \"/" + std::string(150, 'a') + "\"\n");
  Write(d, "bad-syntax.toml", "[hypervisor.qemu\npath = \n");
  Write(d, "dates.toml", "[agent]\nboot_timeout = 1979-05-27T07:32:00Z\n");
  Write(d, "duplicate.toml", "[agent]\nboot_timeout = 1\nboot_timeout = 2\n");
  Write(d, "port-range.toml", "[metrics]\naddress = \"host:70000\"\n");
}

// ------------------------------------------------------------ daemon_request

void DaemonRequestSeeds() {
  const std::string d = "daemon_request";
  const std::string svc = "vmfactory.v1.Factory";
  vmfactory::v1::GetVMRequest def, two, huge;
  two.set_cpus(2);
  two.set_memory_mib(512);
  huge.set_cpus(0xffffffffu);
  huge.set_memory_mib(0xffffffffu);
  vmfactory::v1::GetVMRequest tiny;
  tiny.set_memory_mib(16);
  vmfactory::v1::Empty empty;

  Write(d, "getvm-default", Byte(0) + Call(1, Req(svc, "GetVM", def)));
  Write(d, "getvm-2-512", Byte(0) + Call(1, Req(svc, "GetVM", two)));
  Write(d, "getvm-huge", Byte(0) + Call(1, Req(svc, "GetVM", huge)));
  Write(d, "getvm-too-small", Byte(0) + Call(1, Req(svc, "GetVM", tiny)));
  Write(d, "getvm-malformed", Byte(0) + Call(1, Req(svc, "GetVM", empty) + "\x12\x05\x08"));
  Write(d, "status", Byte(0) + Call(1, Req(svc, "Status", empty)));
  Write(d, "config", Byte(0) + Call(1, Req(svc, "Config", empty)));
  Write(d, "quit", Byte(0) + Call(1, Req(svc, "Quit", empty)));
  Write(d, "unknown-method", Byte(0) + Call(1, Req(svc, "Destroy", empty)));
  Write(d, "unknown-service", Byte(0) + Call(1, Req("grpc.AgentService", "ExecProcess", empty)));
  Write(d, "even-id", Byte(0) + Call(2, Req(svc, "Status", empty)));
  Write(d, "ids-not-increasing",
        Byte(0) + Call(5, Req(svc, "Status", empty)) + Call(3, Req(svc, "Config", empty)) +
            Call(5, Req(svc, "Status", empty)) + Call(7, Req(svc, "Quit", empty)));
  Write(d, "malformed-request", Byte(0) + Call(1, "\x0a\xff\xff\xff\xff\x0f"));
  Write(d, "response-and-data-frames",
        Byte(0) + Resp(1, "") + EncodeFrame(3, kTypeData, 1, "x") + Call(5, Req(svc, "Status", empty)));
  Write(d, "oversized", Byte(0) + Header(5u << 20, 1, kTypeRequest) + "abc");
  Write(d, "session-in-pieces",
        Byte(5) + Call(1, Req(svc, "Config", empty)) + Call(3, Req(svc, "GetVM", two)) +
            Call(5, Req(svc, "Status", empty)));
  Write(d, "long-names", Byte(0) + Call(1, Req(std::string(300, 's'), std::string(300, 'm'), empty)));
}

// ------------------------------------------------------------ agent_request

void AgentRequestSeeds() {
  const std::string d = "agent_request";
  const std::string as = "grpc.AgentService";
  grpc::CheckRequest check;
  grpc::ExecProcessRequest exec;
  exec.set_container_id("c1");
  exec.set_exec_id("e1");
  exec.mutable_process()->add_args("sh");
  exec.mutable_process()->add_args("-c");
  exec.mutable_process()->add_args("echo hi");
  exec.mutable_process()->add_env("PATH=/bin");
  exec.mutable_process()->set_cwd("/");
  grpc::ExecProcessRequest exec_empty;
  exec_empty.set_exec_id("e2");
  grpc::WaitProcessRequest wait;
  wait.set_container_id("c1");
  wait.set_exec_id("e1");
  grpc::SignalProcessRequest sig;
  sig.set_container_id("c1");
  sig.set_exec_id("e1");
  sig.set_signal(15);
  grpc::WriteStreamRequest in;
  in.set_container_id("c1");
  in.set_exec_id("e1");
  in.set_data("input\n");
  grpc::ReadStreamRequest rd;
  rd.set_container_id("c1");
  rd.set_exec_id("e1");
  rd.set_len(1 << 20);
  grpc::CloseStdinRequest close;
  close.set_container_id("c1");
  close.set_exec_id("e1");
  grpc::OnlineCPUMemRequest online;
  online.set_wait(true);
  online.set_nb_cpus(2);
  grpc::ReseedRandomDevRequest reseed;
  reseed.set_data(std::string(64, '\x5a'));
  grpc::GuestDetailsRequest details;
  details.set_mem_block_size(true);
  details.set_mem_hotplug_probe(true);
  grpc::SetGuestDateTimeRequest time;
  time.set_sec(1700000000);
  time.set_usec(5000);
  grpc::SetGuestDateTimeRequest bad_time;
  bad_time.set_sec(1);
  bad_time.set_usec(1000000);
  grpc::CreateSandboxRequest sandbox;
  sandbox.set_hostname("vm-a1b2c3");
  grpc::CreateSandboxRequest long_host;
  long_host.set_hostname(std::string(80, 'h'));
  grpc::DestroySandboxRequest destroy;

  Write(d, "sync-check", Call(1, Req("grpc.Health", "Check", check, true)));
  Write(d, "check-version",
        Call(1, Req("grpc.Health", "Check", check)) + Call(3, Req("grpc.Health", "Version", check)));
  Write(d, "exec", Call(1, Req(as, "ExecProcess", exec)));
  Write(d, "exec-empty-args", Call(1, Req(as, "ExecProcess", exec_empty)));
  Write(d, "process-calls",
        Call(1, Req(as, "WaitProcess", wait)) + Call(3, Req(as, "SignalProcess", sig)) +
            Call(5, Req(as, "WriteStdin", in)) + Call(7, Req(as, "ReadStdout", rd)) +
            Call(9, Req(as, "ReadStderr", rd)) + Call(11, Req(as, "CloseStdin", close)));
  Write(d, "online-cpu-mem", Call(1, Req(as, "OnlineCPUMem", online)));
  Write(d, "reseed", Call(1, Req(as, "ReseedRandomDev", reseed)));
  Write(d, "reseed-empty", Call(1, Req(as, "ReseedRandomDev", grpc::ReseedRandomDevRequest())));
  Write(d, "guest-details", Call(1, Req(as, "GetGuestDetails", details)));
  Write(d, "set-time",
        Call(1, Req(as, "SetGuestDateTime", time)) + Call(3, Req(as, "SetGuestDateTime", bad_time)));
  Write(d, "create-sandbox",
        Call(1, Req(as, "CreateSandbox", sandbox)) + Call(3, Req(as, "CreateSandbox", long_host)));
  Write(d, "destroy-sandbox", Call(1, Req(as, "DestroySandbox", destroy)));
  Write(d, "unknown",
        Call(1, Req("grpc.Nope", "X", check)) + Call(3, Req(as, "Nope", check)) +
            Call(5, Req("grpc.Health", "Nope", check)));
  Write(d, "stream-ids",
        Call(3, Req("grpc.Health", "Check", check)) + Call(2, Req("grpc.Health", "Check", check)) +
            Call(1, Req("grpc.Health", "Check", check)) + Call(1, Req("grpc.Health", "Check", check, true)));
  Write(d, "malformed",
        Call(1, "\x0a\xff\xff") + Call(3, Req(as, "WaitProcess", check) + "\x1a\x03\x0a\xff"));
  Write(
      d, "oversized-then-check",
      Header(5u << 20, 1, kTypeRequest) + std::string(64, 'z') + Call(3, Req("grpc.Health", "Check", check)));
  Write(d, "data-and-response-frames",
        EncodeFrame(1, kTypeData, 4, "") + Resp(3, "") + Call(5, Req("grpc.Health", "Check", check)));
  Write(d, "half-frame", Call(1, Req("grpc.Health", "Check", check)).substr(0, 15));
}

// ---------------------------------------------------------- proxy_session
// Byte 0 seeds the sync ids; then opcodes (see fuzz_proxy_session.cc).

std::string AgentBytes(const std::string& bytes) {
  return Byte(0) + Byte(static_cast<uint8_t>(bytes.size())) + bytes;
}
std::string ClientCall(uint8_t client, uint8_t stream, const std::string& payload) {
  return Byte(1) + Byte(client) + Byte(stream) + Byte(static_cast<uint8_t>(payload.size())) + payload;
}
std::string Tick(uint8_t tens_of_ms) { return Byte(2) + Byte(tens_of_ms); }
std::string ClientGone(uint8_t client) { return Byte(3) + Byte(client); }
std::string AnswerSync() { return Byte(4); }
std::string AnswerCall(uint8_t k, uint8_t how) { return Byte(5) + Byte(k) + Byte(how); }
std::string OversizedReply(uint8_t k) { return Byte(6) + Byte(k); }
std::string ClientData(uint8_t client, uint8_t stream) { return Byte(7) + Byte(client) + Byte(stream); }

void ProxySessionSeeds() {
  const std::string d = "proxy_session";
  Write(d, "sync-and-call", Byte(7) + AnswerSync() + ClientCall(0, 1, "abc") + AnswerCall(0, 0));
  Write(d, "calls-before-sync",
        Byte(1) + ClientCall(0, 1, "a") + ClientCall(1, 1, "b") + AnswerSync() + AnswerCall(1, 1) +
            AnswerCall(0, 0));
  Write(d, "stale-then-sync",
        Byte(2) + AgentBytes(std::string("\x00\x00\x00\x40\x00\x00", 6) + "garbage") +
            AgentBytes(Resp(99, Ok(grpc::Empty()))) + AnswerSync() + ClientCall(2, 3, "x") +
            AnswerCall(0, 2));
  Write(d, "reply-in-two-reads", Byte(3) + AnswerSync() + ClientCall(0, 1, "") + AnswerCall(0, 4));
  Write(d, "silence-mid-frame",
        Byte(4) + AnswerSync() + ClientCall(0, 1, "q") + ClientCall(1, 5, "r") + AgentBytes("\x00\x00\x00") +
            Tick(30) + Tick(30) + AnswerSync() + ClientCall(0, 3, "again") + AnswerCall(2, 0));
  Write(d, "sync-retries",
        Byte(5) + Tick(160) + Tick(160) + AnswerSync() + AnswerSync() + AnswerSync() + AnswerSync());
  Write(d, "oversized-reply",
        Byte(6) + AnswerSync() + ClientCall(0, 1, "") + ClientCall(1, 1, "") + OversizedReply(0) +
            ClientCall(0, 3, "after"));
  Write(d, "never-opened",
        Byte(8) + AnswerSync() + AgentBytes(Resp(0x7ffffff1u, Ok(grpc::Empty()))) + ClientCall(0, 1, ""));
  Write(d, "request-from-agent",
        Byte(9) + AnswerSync() + ClientCall(0, 1, "") +
            AgentBytes(Call(1, Req("grpc.Health", "Check", grpc::Empty()))));
  Write(d, "client-gone-late-reply",
        Byte(10) + AnswerSync() + ClientCall(0, 1, "") + ClientCall(1, 1, "") + ClientGone(0) +
            AnswerCall(0, 0) + AnswerCall(1, 0) + ClientCall(0, 1, "back"));
  Write(d, "bad-client-ids",
        Byte(11) + AnswerSync() + ClientCall(0, 2, "") + ClientCall(0, 1, "") + ClientCall(0, 1, "") +
            ClientData(0, 3) + ClientCall(0, 3, ""));
  Write(d, "shutdown-with-pending", Byte(12) + ClientCall(0, 1, "") + AnswerSync() + ClientCall(1, 7, ""));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_ROOT (fuzz/corpus)\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  TtrpcFrameSeeds();
  QmpSeeds();
  ConfigSeeds();
  DaemonRequestSeeds();
  AgentRequestSeeds();
  ProxySessionSeeds();
  std::printf("wrote %d seeds under %s\n", g_written, g_root.c_str());
  return 0;
}
