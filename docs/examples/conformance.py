#!/usr/bin/env python3
"""A second-language client of snapsafe, written from docs/ABI.md alone.

It maps the generation page and drives the control protocol with nothing
but Python's socket, mmap, struct and fcntl modules, and checks every rule
of the ABI it exercises. The Go tests run it against a real provider
(runtime/provider/conformance_linux_test.go); by hand:

    python3 docs/examples/conformance.py --dir /run/snapsafe

It needs a provider with the manual backend (so that nothing but this
script bumps) and the privilege to force bumps (root or the provider's
user). It prints one line per check and ends with "N passed, M failed".
"""

import argparse
import array
import fcntl
import json
import mmap
import os
import socket
import struct
import sys
import time

# ABI §2: the page.
PAGE_SIZE = 4096
MAGIC = 0x46534E53
OFF_MAGIC, OFF_VERSION, OFF_SIZE = 0x000, 0x004, 0x008
OFF_GENERATION, OFF_SEQ, OFF_WIPED = 0x040, 0x080, 0x088
OFF_EPOCH, OFF_REALTIME, OFF_REASON, OFF_STATE, OFF_PID, OFF_BACKEND = 0x090, 0x0A0, 0x0B0, 0x0B4, 0x0B8, 0x0BC
REASONS = {0: "none", 1: "startup", 2: "acpi", 3: "vmclock", 4: "forced"}

# ABI §3: the protocol.
VERSION = 1
HEADER = struct.Struct("<BBHI")  # version, type, reserved, request id
MAX_MESSAGE = 4096
STATUS, WATCH, ACK, WAIT, CANCEL, BUMP, REGION, VMCLOCK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
REPLY = 0x80
EVENT, ERROR = 0xC0, 0xFF
WAIT_OK, WAIT_NEW_GENERATION, WAIT_CANCELLED = 0, 1, 2
CODE_MALFORMED, CODE_UNKNOWN, CODE_VERSION = 1, 2, 3
CODE_BAD_ACK, CODE_NOT_WATCHER, CODE_INVALID, CODE_UNAVAILABLE = 5, 6, 8, 10

# ABI §4: wipe regions are sealed memfds.
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 0x0001, 0x0002, 0x0004

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + what)
    else:
        failed += 1
        print("FAIL " + what)


class Page:
    """A read-only mapping of the generation page."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.m = mmap.mmap(f.fileno(), PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        self.u64 = memoryview(self.m).cast("Q")  # aligned 8-byte loads

    def word(self, off):
        return self.u64[off // 8]

    def generation(self):
        # §2.1: one 64-bit load.
        return self.word(OFF_GENERATION)

    def snapshot(self):
        # §2.2: the seqlock; give up after about 500 ms.
        deadline = time.monotonic() + 0.5
        while True:
            s1 = self.word(OFF_SEQ)
            if s1 % 2 == 0:
                raw = bytes(self.m[:PAGE_SIZE])
                if self.word(OFF_SEQ) == s1:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("seq stayed odd for 500 ms")
            time.sleep(0.0001)
        u32 = lambda off: struct.unpack_from("<I", raw, off)[0]
        u64 = lambda off: struct.unpack_from("<Q", raw, off)[0]
        return {
            "magic": u32(OFF_MAGIC),
            "version": struct.unpack_from("<H", raw, OFF_VERSION)[0],
            "size": u32(OFF_SIZE),
            "generation": u64(OFF_GENERATION),
            "wiped": u64(OFF_WIPED),
            "epoch": raw[OFF_EPOCH:OFF_EPOCH + 16],
            "reason": REASONS.get(u32(OFF_REASON), "?"),
            "state": u32(OFF_STATE),
            "pid": u32(OFF_PID),
        }


class Conn:
    """One SOCK_SEQPACKET control connection."""

    def __init__(self, sockpath):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(5)
        self.s.connect(sockpath)
        self.next_id = 0

    def send(self, typ, payload=b"", rid=None, reserved=0):
        if rid is None:
            self.next_id += 1
            rid = self.next_id
        self.s.send(HEADER.pack(VERSION, typ, reserved, rid) + payload)
        return rid

    def recv(self):
        """Returns (type, id, payload, fds), or None at EOF."""
        data, anc, flags, _ = self.s.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * 4))
        if not data:
            return None
        fds = array.array("i")
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
        version, typ, reserved, rid = HEADER.unpack_from(data)
        assert version == VERSION and reserved == 0, "bad header from the provider"
        return typ, rid, data[HEADER.size:], list(fds)

    def call(self, typ, payload=b""):
        rid = self.send(typ, payload)
        while True:
            m = self.recv()
            if m is None or m[0] != EVENT:
                return m
            # Events may come between a request and its reply (§3).

    def close(self):
        self.s.close()


def u64(v):
    return struct.pack("<Q", v)


def error_of(m):
    code = struct.unpack_from("<I", m[2])[0]
    return code, m[2][4:].decode("utf-8", "replace")


def refused(sockpath, raw, want_code, want_id, what):
    """Sends one bad datagram; the provider must answer with an error and close."""
    c = Conn(sockpath)
    c.s.send(raw)
    m = c.recv()
    ok = m is not None and m[0] == ERROR and error_of(m)[0] == want_code and m[1] == want_id
    check(ok, "%s: error code %d with id %d (got %s)" % (what, want_code, want_id,
          None if m is None else (hex(m[0]), m[1], error_of(m) if m[0] == ERROR else m[2])))
    check(c.recv() is None, what + ": the connection is closed after the error")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the provider's state directory")
    args = ap.parse_args()
    sockpath = os.path.join(args.dir, "control.sock")

    # §2: the page.
    page = Page(os.path.join(args.dir, "generation"))
    snap = page.snapshot()
    check(snap["magic"] == MAGIC and snap["version"] == 1 and snap["size"] == PAGE_SIZE,
          "page header: magic SNSF, version 1, size 4096")
    check(snap["generation"] >= 1 and snap["state"] == 1, "a running provider published generation >= 1")
    check(snap["wiped"] == snap["generation"], "wiped mark equals the generation between bumps")

    # §3: status.
    c = Conn(sockpath)
    m = c.call(STATUS)
    st = json.loads(m[2]) if m and m[0] == STATUS | REPLY else {}
    check(st.get("generation") == page.generation(), "status reply (0x81) carries the page's generation")
    for key in ("watchers", "outdated", "waiting", "clients", "regions", "region_bytes", "bumps",
                "backend", "source", "epoch", "reason", "state", "provider_pid", "dir", "vmgenid"):
        check(key in st, "status JSON has key %r" % key)
    check(st.get("provider_pid") == snap["pid"], "status provider_pid matches the page")

    # §3.1: watchers, events, acks.
    w = Conn(sockpath)
    m = w.call(WATCH)
    g0 = struct.unpack("<Q", m[2])[0] if m and m[0] == WATCH | REPLY else 0
    check(g0 == page.generation(), "watch reply (0x82) is the current generation")
    m = w.call(ACK, u64(g0 + 7))
    check(m[0] == ERROR and error_of(m)[0] == CODE_BAD_ACK, "ack of another generation: code 5")
    m = c.call(ACK, u64(g0))
    check(m[0] == ERROR and error_of(m)[0] == CODE_NOT_WATCHER, "ack from a non-watcher: code 6")

    # §3.3: the wait ends at once when nobody is outdated, and with 1 for a stale generation.
    m = c.call(WAIT, u64(0))
    check(m[0] == WAIT | REPLY and struct.unpack_from("<I", m[2])[0] == WAIT_OK, "wait with no outdated watcher: result 0")
    m = c.call(WAIT, u64(g0 + 100))
    check(m[0] == WAIT | REPLY and struct.unpack_from("<I", m[2])[0] == WAIT_NEW_GENERATION, "wait with a stale generation: result 1")

    # Cancel with no wait pending is ignored: the next message is the next reply.
    c.send(CANCEL, rid=0)
    m = c.call(STATUS)
    check(m is not None and m[0] == STATUS | REPLY and m[1] == c.next_id, "cancel with no wait pending: no reply")

    # §4: a wipe region before the bump, to see it zeroed by it.
    m = c.call(REGION, struct.pack("<I", 100))
    ok = m is not None and m[0] == REGION | REPLY and len(m[3]) == 1
    check(ok, "region reply (0x87) carries one descriptor")
    region = None
    if ok:
        fd = m[3][0]
        size = struct.unpack("<I", m[2])[0]
        check(size == PAGE_SIZE and os.fstat(fd).st_size == PAGE_SIZE, "region size rounded up to a page")
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        check(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL,
              "region sealed against shrink, grow and more seals")
        region = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        region[:5] = b"hello"

    # A forced bump (§3.4): max(minimum, current+1); the page follows the §2.3 order.
    w2 = Conn(sockpath)
    w2.call(WAIT, u64(0))  # nobody is outdated yet: ends at once
    m = c.call(BUMP, u64(0))
    g1 = struct.unpack("<Q", m[2])[0] if m and m[0] == BUMP | REPLY else 0
    check(g1 == g0 + 1, "bump reply (0x86): current + 1")
    snap1 = page.snapshot()
    check(page.generation() == g1 and snap1["wiped"] == g1 and snap1["reason"] == "forced",
          "page after the bump: generation, wiped mark, reason forced")
    check(snap1["epoch"] != snap["epoch"], "a new epoch for the new generation")
    if region is not None:
        check(region[:5] == b"\0" * 5, "the bump zeroed the wipe region")
    m = c.call(BUMP, u64(g1 + (1 << 32) + 1))
    check(m[0] == ERROR and error_of(m)[0] == CODE_INVALID, "bump far beyond the generation: code 8")
    check(page.generation() == g1, "a refused bump changes nothing")

    # The watcher got one event with the new generation and is outdated.
    ev = w.recv()
    check(ev is not None and ev[0] == EVENT and ev[1] == 0 and struct.unpack("<Q", ev[2])[0] == g1,
          "generation event (0xc0, id 0) carries the new generation")
    m = c.call(STATUS)
    check(json.loads(m[2]).get("outdated") == 1, "the watcher is outdated until it acks")

    # An orchestrator wait ends only once the watcher acks.
    rid = w2.send(WAIT, u64(g1))
    w2.s.settimeout(0.2)
    try:
        early = w2.recv()
    except socket.timeout:
        early = None
    w2.s.settimeout(5)
    check(early is None, "wait is pending while a watcher is outdated")
    m = w.call(ACK, u64(g1))
    check(m[0] == ACK | REPLY and struct.unpack("<Q", m[2])[0] == g1, "ack reply (0x83)")
    m = w2.recv()
    check(m is not None and m[0] == WAIT | REPLY and m[1] == rid and struct.unpack_from("<I", m[2])[0] == WAIT_OK,
          "the wait ends with result 0 once the watcher acked")

    # Cancel ends a pending wait with result 2.
    w.close()
    w3 = Conn(sockpath)
    w3.call(WATCH)
    c.call(BUMP, u64(0))
    rid = c.send(WAIT, u64(0))
    c.send(CANCEL, rid=0)
    m = c.recv()
    while m is not None and m[0] == EVENT:
        m = c.recv()
    check(m is not None and m[0] == WAIT | REPLY and m[1] == rid and struct.unpack_from("<I", m[2])[0] == WAIT_CANCELLED,
          "cancel ends the pending wait with result 2")
    w3.close()

    # §3.5: no VMClock device with the manual backend.
    m = c.call(VMCLOCK)
    check(m[0] == ERROR and error_of(m)[0] == CODE_UNAVAILABLE, "VMClock request without the device: code 10")

    # §3: refusals; each closes the connection.
    refused(sockpath, b"hello provider", CODE_VERSION, 0, "another version")
    refused(sockpath, b"\x01\x02", CODE_MALFORMED, 0, "shorter than a header")
    refused(sockpath, HEADER.pack(VERSION, STATUS, 1, 9), CODE_MALFORMED, 9, "reserved header bytes set")
    refused(sockpath, HEADER.pack(VERSION, ACK, 0, 10) + b"\x01", CODE_MALFORMED, 10, "wrong payload size")
    refused(sockpath, HEADER.pack(VERSION, 0x33, 0, 11), CODE_UNKNOWN, 11, "unknown type")
    refused(sockpath, HEADER.pack(VERSION, BUMP | REPLY, 0, 12), CODE_UNKNOWN, 12, "a reply type sent to the provider")
    refused(sockpath, HEADER.pack(VERSION, STATUS, 0, 13) + bytes(MAX_MESSAGE), CODE_MALFORMED, 13, "longer than 4096 bytes")
    m = c.call(STATUS)
    check(m is not None and m[0] == STATUS | REPLY, "the provider still serves others")

    # §3.2: a connection reads EOF when the provider goes; not exercised here
    # (the Go test stops the provider and checks that separately).
    c.close()
    w2.close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
