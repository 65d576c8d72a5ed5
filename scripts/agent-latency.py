#!/usr/bin/env python3
"""Where the time of a pool hit goes: round trips to the guest agent of a
running VM, straight through its proxy socket, with nothing of vmfactory's
host library in between.

    build/bin/vmfactory run -- sleep 60 &        # any running VM
    scripts/agent-latency.py /run/vmfactory/vm/ID/proxy.sock

Prints the mean of N grpc.Health/Check calls one after the other and N sent
at once, then, for a few `echo ready` commands: ExecProcess (the agent
replies once the command has been exec'd), and ReadStdout until its output.
Speaks ttrpc itself: a 10-byte header (length, stream id, type, flags;
big-endian) and protobuf bodies built by hand, so that it needs nothing but
Python 3.
"""
import socket
import struct
import sys
import time

REQUEST, RESPONSE = 1, 2


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, data):
    """A length-delimited protobuf field (strings, bytes, messages)."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def request(service, method, payload=b""):
    # ttrpc.Request: service = 1, method = 2, payload = 3.
    return field(1, service.encode()) + field(2, method.encode()) + field(3, payload)


class Channel:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.next_id = 1

    def send(self, body):
        self.sock.sendall(struct.pack(">IIBB", len(body), self.next_id, REQUEST, 0) + body)
        self.next_id += 2

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the proxy closed the connection")
            data += chunk
        return data

    def receive(self):
        length, _, kind, _ = struct.unpack(">IIBB", self._read(10))
        if length > 4 << 20:
            raise ValueError(f"reply of {length} bytes")
        body = self._read(length)
        if kind != RESPONSE:
            raise ValueError(f"frame type {kind}, not a response")
        return body

    def call(self, body):
        self.send(body)
        reply = self.receive()
        # ttrpc.Response: status = 1 (present only on error), payload = 2.
        if reply[:1] == b"\x0a":
            raise RuntimeError(f"the agent answered with an error: {reply!r}")
        return reply


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ch = Channel(sys.argv[1])
    n = 50
    check = request("grpc.Health", "Check", field(1, b""))
    ch.call(check)

    start = time.perf_counter()
    for _ in range(n):
        ch.call(check)
    one_by_one = (time.perf_counter() - start) / n * 1000
    start = time.perf_counter()
    for _ in range(n):
        ch.send(check)
    for _ in range(n):
        ch.receive()
    at_once = (time.perf_counter() - start) / n * 1000
    print(f"Health/Check: {one_by_one:.2f} ms per call one by one, {at_once:.2f} ms per call with {n} at once")

    for i in range(6):
        exec_id = f"latency-{i}-{time.time_ns()}".encode()
        process = field(4, b"echo") + field(4, b"ready")  # Process.Args = 4
        ids = field(2, exec_id)  # exec_id = 2 in every request used here
        t0 = time.perf_counter()
        ch.call(request("grpc.AgentService", "ExecProcess", ids + field(4, process)))
        t1 = time.perf_counter()
        ch.call(request("grpc.AgentService", "ReadStdout", ids))
        t2 = time.perf_counter()
        ch.call(request("grpc.AgentService", "WaitProcess", ids))
        print(f"echo ready: ExecProcess {1000 * (t1 - t0):.1f} ms, then its output {1000 * (t2 - t1):.1f} ms,"
              f" {1000 * (t2 - t0):.1f} ms in all")


if __name__ == "__main__":
    main()
