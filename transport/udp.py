"""UDP sockets for the adapters: big buffers, Linux GSO on send and GRO on receive.

GSO (``UDP_SEGMENT``) hands the kernel one buffer holding many equal-size datagrams; GRO
(``UDP_GRO``) hands back many datagrams from one peer in one read. Either is probed once and
dropped for plain ``sendto``/``recvfrom`` where the kernel refuses it.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
MAX_GSO_BYTES = 65_000
READ_BYTES = 65_535
_SEGMENT = struct.Struct("=H")
_GRO = struct.Struct("=i")

Address = tuple[str, int]


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> Address:
    """``"HOST:PORT"``, ``":PORT"`` or ``"[v6]:PORT"`` to an address; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


def open_socket(local: Address, buffer_bytes: int, remote: Address | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``local`` (and connected to ``remote`` if given)."""
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for force, plain in (
            (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
            (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
        ):
            try:  # the *FORCE variants pass rmem_max/wmem_max when we may (root)
                if force is None:
                    raise PermissionError
                sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
        sock.setblocking(False)
        sock.bind(local)
        if remote is not None:
            sock.connect(remote)
    except BaseException:
        sock.close()
        raise
    return sock


class DatagramIO:
    """Batched reads and writes on one socket, with GSO/GRO when the kernel has them."""

    def __init__(self, sock: socket.socket, *, offload: bool = True) -> None:
        self.sock = sock
        self.gso = offload and sys.platform == "linux"
        self.gro = False
        if offload and sys.platform == "linux":
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError as exc:
                log.info("UDP_GRO unavailable: %s", exc)
        self.blocked: list[tuple[bytes, Address]] = []  # waiting for the socket to drain

    def read(self, limit: int, *, until_empty: bool = False) -> list[tuple[bytes, Address]]:
        """Up to ``limit`` reads' worth of datagrams; empty when nothing is waiting.

        Without ``until_empty`` it stops after a lone (not coalesced) datagram: an event loop
        calls again while the socket stays readable, and the failing read is saved. A poll
        loop has nobody to call it again, so it passes ``until_empty=True``.
        """
        out: list[tuple[bytes, Address]] = []
        sock = self.sock
        for _ in range(limit):
            try:
                if self.gro:
                    data, anc, _flags, addr = sock.recvmsg(READ_BYTES, 64)
                else:
                    data, addr = sock.recvfrom(READ_BYTES)
                    anc = []
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors (port unreachable) surface on the next read; not fatal for UDP.
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            addr = (addr[0], addr[1])
            segment = 0
            for level, kind, value in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = _GRO.unpack(value[: _GRO.size])[0]
            if segment and len(data) > segment:
                for start in range(0, len(data), segment):
                    out.append((data[start : start + segment], addr))
            else:
                out.append((data, addr))
                if not until_empty:
                    # Most likely nothing else waits, and asking again would cost a failing
                    # system call and an exception.
                    break
        return out

    def write(self, datagrams: list[tuple[bytes, Address]]) -> bool:
        """Send what the socket takes; keep the rest in ``blocked``. True if all went out."""
        if self.blocked:
            self.blocked.extend(datagrams)
            datagrams, self.blocked = self.blocked, []
        elif len(datagrams) == 1:  # the realtime case: one message, one datagram
            try:
                self._sendto(*datagrams[0])
            except (BlockingIOError, InterruptedError):
                self.blocked = datagrams
                return False
            except OSError as exc:
                log.debug("send failed: %s", exc)
            return True
        i = 0
        n = len(datagrams)
        try:
            while i < n:
                if self.gso:
                    i = self._write_gso(datagrams, i)
                else:
                    data, addr = datagrams[i]
                    self._sendto(data, addr)
                    i += 1
        except (BlockingIOError, InterruptedError):
            self.blocked = datagrams[i:]
            return False
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                log.debug("send failed: %s", exc)  # the peer's loss; recovery handles it
            self.blocked = datagrams[i + 1 :]
            return not self.blocked
        return True

    def _sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return  # reported by ICMP for an earlier datagram: UDP carries on
            raise

    def _write_gso(self, datagrams: list[tuple[bytes, Address]], i: int) -> int:
        """Send one GSO batch starting at ``i``: same address, equal sizes, last may be
        shorter. Returns the index after the batch."""
        first, addr = datagrams[i]
        size = len(first)
        j = i + 1
        total = size
        n = len(datagrams)
        while j < n and j - i < MAX_GSO_SEGMENTS:
            data, other = datagrams[j]
            if other != addr or len(data) > size or total + len(data) > MAX_GSO_BYTES:
                break
            total += len(data)
            j += 1
            if len(data) < size:
                break
        if j - i == 1:
            self._sendto(first, addr)
            return j
        buf = b"".join(d for d, _ in datagrams[i:j])
        try:
            self.sock.sendmsg([buf], [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))], 0, addr)
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT):
                raise
            log.info("UDP GSO refused (%s); sending datagrams one by one", exc)
            self.gso = False
            for data, _ in datagrams[i:j]:
                self._sendto(data, addr)
        return j
