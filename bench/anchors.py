"""Comparison anchors measured through the impairment relay: aiortc data channels and SRT.

Both anchors run on loopback with :mod:`bench.relay` between their two ends, so they meet the
same impairment model as framewire, and each returns result rows in the schema of
:mod:`bench.report`.

- **aiortc**: two ``RTCPeerConnection`` objects in one event loop. ICE is limited to one host
  candidate on 127.0.0.1 and the offerer is given the relay's address in place of the
  answerer's candidate, so every datagram crosses the relay (see :func:`route_candidates`).
  Workloads ``unreliable`` and ``reliable``: 200-byte messages at 60 Hz on each channel.
- **SRT**: ``srt-live-transmit`` twice (UDP → SRT caller → relay → SRT listener → UDP); a
  probe sends a ~4 Mbit/s, 30 frame/s "video" workload of 1316-byte chunks in and times the
  frames coming out.

The pure parts (message and chunk codecs, frame assembly, row building, SDP and URI text)
take no sockets or clocks and are tested on their own; the runners are the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import os
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from bench.errors import BenchError
from bench.relay import RelayProcess

__all__ = [
    "AnchorTiming",
    "AnchorUnavailable",
    "FrameAssembly",
    "MessageWorkload",
    "VideoWorkload",
    "build_row",
    "check_relay_carried",
    "ensure_installed",
    "latency_summary",
    "relay_line",
    "route_candidates",
    "run_aiortc",
    "run_srt",
    "srt_caller_uri",
    "srt_listener_uri",
    "strip_candidates",
    "udp_input_uri",
    "udp_output_uri",
]

Address = tuple[str, int]
LOOPBACK: Final = "127.0.0.1"
AIORTC_REQUIREMENT: Final = "aiortc>=1.16,<2"
INSTALL_TIMEOUT_S: Final = 900.0
OVERALL_SLACK_S: Final = 30.0
"""A run gives up (AnchorUnavailable) after ``duration_s`` plus this."""
MESSAGE_MAGIC: Final = b"FWam"
CHUNK_MAGIC: Final = b"FWav"
MESSAGE_HEADER: Final = struct.Struct("!4sIq")  # magic, sequence, send time (monotonic ns)
CHUNK_HEADER: Final = struct.Struct("!4sIHHq")  # magic, frame, chunk index, chunk count, send ns
WARMUP_FRAME: Final = 0xFFFF_FFFF  # a probe chunk sent before measuring; never counted


class AnchorUnavailable(BenchError):
    """An anchor cannot be measured: not installed, failed to start, timed out, or its
    traffic did not cross the relay. The message is one line."""


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorTiming:
    """How long the runners wait for each phase."""

    setup_timeout_s: float = 15.0  # ICE + DTLS + SCTP, or the SRT handshake, through the relay
    drain_s: float = 3.0  # after the last send, for messages still in flight
    stop_timeout_s: float = 5.0  # for a child process to exit after SIGTERM
    poll_interval_s: float = 0.02

    def __post_init__(self) -> None:
        for name in ("setup_timeout_s", "drain_s", "stop_timeout_s", "poll_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageWorkload:
    """Game-style messages: one per tick on each data channel."""

    rate_hz: float = 60.0
    message_bytes: int = 200

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError("rate_hz must be positive")
        if self.message_bytes < MESSAGE_HEADER.size:
            raise ValueError(f"message_bytes must be at least {MESSAGE_HEADER.size}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoWorkload:
    """Frames of fixed-size chunks, each frame sent as one burst (as an encoder's output)."""

    fps: float = 30.0
    rate_bps: float = 4_000_000.0
    chunk_bytes: int = 1316  # seven MPEG-TS packets: what SRT senders carry per datagram

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.rate_bps > 0):
            raise ValueError("fps and rate_bps must be positive")
        if not CHUNK_HEADER.size <= self.chunk_bytes <= 1456:  # 1456: SRT live payload limit
            raise ValueError(f"chunk_bytes must be in [{CHUNK_HEADER.size}, 1456]")

    @property
    def chunks_per_frame(self) -> int:
        return max(1, round(self.rate_bps / 8 / self.fps / self.chunk_bytes))


DEFAULT_TIMING: Final = AnchorTiming()
DEFAULT_MESSAGES: Final = MessageWorkload()
DEFAULT_VIDEO: Final = VideoWorkload()


# -- codecs -------------------------------------------------------------------------------------


def encode_message(buffer: bytearray, seq: int, send_ns: int) -> bytes:
    """Stamp ``buffer`` (the message, padding included) and return its bytes."""
    MESSAGE_HEADER.pack_into(buffer, 0, MESSAGE_MAGIC, seq, send_ns)
    return bytes(buffer)


def decode_message(data: bytes | str) -> tuple[int, int] | None:
    """``(seq, send_ns)`` of a stamped message; ``None`` for anything else."""
    if not isinstance(data, bytes) or len(data) < MESSAGE_HEADER.size:
        return None
    magic, seq, send_ns = MESSAGE_HEADER.unpack_from(data)
    return (seq, send_ns) if magic == MESSAGE_MAGIC else None


def decode_chunk(data: bytes) -> tuple[int, int, int, int] | None:
    """``(frame, index, count, send_ns)`` of a probe chunk; ``None`` for anything else."""
    if len(data) < CHUNK_HEADER.size:
        return None
    magic, frame, index, count, send_ns = CHUNK_HEADER.unpack_from(data)
    if magic != CHUNK_MAGIC or not index < count:
        return None
    return frame, index, count, send_ns


class FrameAssembly:
    """Which chunks of each measured frame have arrived, and when the frame completed.

    A frame's latency runs from its first chunk's send time to the arrival of the chunk that
    completed it; a frame missing any chunk has none. Duplicates, warm-up chunks, unknown
    frames and chunks that disagree with the frame's chunk count are ignored."""

    __slots__ = ("_arrived", "_count", "_first_send_ns", "_last_ns", "_missing", "complete")

    def __init__(self, frames: int) -> None:
        self._count = [0] * frames
        self._missing = [0] * frames
        self._arrived: list[set[int]] = [set() for _ in range(frames)]
        self._first_send_ns: list[int | None] = [None] * frames
        self._last_ns = [0] * frames
        self.complete = 0

    def add(self, frame: int, index: int, count: int, send_ns: int, arrival_ns: int) -> None:
        if not 0 <= frame < len(self._count) or arrival_ns < send_ns:
            return
        if self._count[frame] == 0:
            self._count[frame] = self._missing[frame] = count
        elif count != self._count[frame]:
            return
        got = self._arrived[frame]
        if index in got or index >= count:
            return
        got.add(index)
        if index == 0:
            self._first_send_ns[frame] = send_ns
        self._last_ns[frame] = max(self._last_ns[frame], arrival_ns)
        self._missing[frame] -= 1
        if self._missing[frame] == 0:
            self.complete += 1

    def latency_ns(self) -> list[int | None]:
        out: list[int | None] = []
        for count, missing, first, last in zip(
            self._count, self._missing, self._first_send_ns, self._last_ns, strict=True
        ):
            done = count > 0 and missing == 0 and first is not None
            out.append(last - first if done and first is not None else None)
        return out


# -- rows ---------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, interpolating linearly (as numpy does)."""
    if not ordered:
        raise ValueError("percentile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/max of the delivered latencies; all ``None`` when there are none."""
    if not latencies_ms:
        return dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    ordered = sorted(latencies_ms)
    return {
        "p50": round(percentile(ordered, 0.50), 3),
        "p90": round(percentile(ordered, 0.90), 3),
        "p99": round(percentile(ordered, 0.99), 3),
        "mean": round(math.fsum(ordered) / len(ordered), 3),
        "max": round(ordered[-1], 3),
    }


def build_row(
    system: str, workload: str, send_ns: Sequence[int], latency_ns: Sequence[int | None]
) -> dict[str, Any]:
    """One result row from a timeline: each message's send time and latency (``None``: never
    delivered), in send order. ``late`` is always 0: neither anchor reports lateness."""
    if len(send_ns) != len(latency_ns):
        raise ValueError(f"{len(send_ns)} send times but {len(latency_ns)} latencies")
    first = send_ns[0] if send_ns else 0
    series_latency = [None if v is None else round(v / 1e6, 3) for v in latency_ns]
    delivered_ms = [v for v in series_latency if v is not None]
    return {
        "system": system,
        "workload": workload,
        "sent": len(send_ns),
        "delivered": len(delivered_ms),
        "lost": len(send_ns) - len(delivered_ms),
        "late": 0,
        "latency_ms": latency_summary(delivered_ms),
        "series": {
            "send_s": [round((t - first) / 1e9, 6) for t in send_ns],
            "latency_ms": series_latency,
        },
    }


def relay_line(summary: dict[str, Any]) -> str:
    """One line of the relay's counters, for progress output."""

    def one(name: str) -> str:
        d = summary.get(name, {})
        return f"{name} {d.get('received', '?')} in, {d.get('sent', '?')} out"

    return f"relay: {one('forward')}; {one('reverse')}"


def check_relay_carried(summary: dict[str, Any], *, expected_forward: int, what: str) -> None:
    """Raise AnchorUnavailable unless the relay saw the traffic: at least 90 % of the
    ``expected_forward`` datagrams the sender pushed, and some answers coming back."""
    try:
        forward = int(summary["forward"]["received"])
        reverse = int(summary["reverse"]["received"])
    except (KeyError, TypeError, ValueError):
        raise AnchorUnavailable(f"{what}: the relay summary has no traffic counters") from None
    if forward < 0.9 * expected_forward or reverse == 0:
        raise AnchorUnavailable(
            f"{what}: traffic did not cross the relay (it received {forward} datagrams forward "
            f"and {reverse} back, for {expected_forward} sent)"
        )


# -- SDP (aiortc) -------------------------------------------------------------------------------


def strip_candidates(sdp: str) -> str:
    """``sdp`` without its ICE candidates and without ``end-of-candidates``.

    The answerer then has nothing to check and keeps waiting for candidates (trickle ICE):
    it learns the offerer only as the peer-reflexive address the relay's checks come from
    (RFC 8445 §7.3.1.3), so it never sends around the relay."""
    lines = sdp.split("\r\n")
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept)


def candidate_addresses(sdp: str) -> list[Address]:
    """The (address, port) of each ICE candidate line in ``sdp``."""
    out: list[Address] = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) >= 6 and fields[5].isdigit():
                out.append((fields[4], int(fields[5])))
    return out


def route_candidates(sdp: str, via: Address) -> str:
    """``sdp`` with every ICE candidate's address and port replaced by ``via``."""
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) >= 6:
                fields[4], fields[5] = via[0], str(via[1])
                lines[i] = " ".join(fields)
    return "\r\n".join(lines)


# -- URIs (SRT) ---------------------------------------------------------------------------------


def _srt_options(latency_ms: int) -> str:
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be non-negative, got {latency_ms}")
    return f"latency={latency_ms}&transtype=live"


def srt_caller_uri(target: Address, latency_ms: int) -> str:
    """The SRT caller sending to ``target``, bound to loopback. ``mode=caller`` must be
    explicit: with ``adapter`` set, srt-live-transmit would otherwise pick rendezvous."""
    return f"srt://{target[0]}:{target[1]}?mode=caller&adapter={LOOPBACK}&" + _srt_options(
        latency_ms
    )


def srt_listener_uri(port: int, latency_ms: int) -> str:
    """The SRT listener; in listener mode the host part is the address it binds."""
    return f"srt://{LOOPBACK}:{port}?mode=listener&" + _srt_options(latency_ms)


def udp_input_uri(port: int) -> str:
    """Where srt-live-transmit reads UDP; for input the host part is the address it binds."""
    return f"udp://{LOOPBACK}:{port}"


def udp_output_uri(port: int) -> str:
    """Where srt-live-transmit writes UDP, from a socket bound to loopback."""
    return f"udp://{LOOPBACK}:{port}?adapter={LOOPBACK}"


# -- installation -------------------------------------------------------------------------------


def ensure_installed(system: str, *, install: bool, say: Callable[[str], None]) -> None:
    """Make sure the anchor ``system`` ("aiortc" or "srt") can run.

    With ``install`` it installs what is missing (pip for aiortc, keeping the installed PyAV;
    apt-get for SRT's ``srt-tools``); without, it raises AnchorUnavailable naming the exact
    command that would."""
    if system == "aiortc":
        _ensure_aiortc(install=install, say=say)
    elif system == "srt":
        _ensure_srt(install=install, say=say)
    else:
        raise ValueError(f"unknown anchor {system!r}: expected 'aiortc' or 'srt'")


def aiortc_install_command() -> list[str]:
    """The pip command that installs aiortc without moving PyAV from its installed version."""
    cmd = [sys.executable, "-m", "pip", "install", AIORTC_REQUIREMENT]
    av = _installed_version("av")
    if av is not None:
        cmd.append(f"av=={av}")  # aiortc depends on av: keep the project's build, never re-pick it
    return cmd


def srt_install_command() -> list[str]:
    return ["apt-get", "install", "-y", "srt-tools"]


def _ensure_aiortc(*, install: bool, say: Callable[[str], None]) -> None:
    if _can_import("aiortc"):
        return
    cmd = aiortc_install_command()
    if not install:
        raise AnchorUnavailable(f"aiortc is not installed; install it with: {shlex.join(cmd)}")
    av_before = _installed_version("av")
    say(f"installing aiortc: {shlex.join(cmd)}")
    _run_installer(cmd, "aiortc", env=None)
    importlib.invalidate_caches()
    av_after = _installed_version("av")
    if av_after != av_before:
        raise AnchorUnavailable(f"installing aiortc changed PyAV from {av_before} to {av_after}")
    if not _can_import("aiortc"):
        raise AnchorUnavailable(f"aiortc still cannot be imported after: {shlex.join(cmd)}")


def _ensure_srt(*, install: bool, say: Callable[[str], None]) -> None:
    if shutil.which("srt-live-transmit") is not None:
        return
    cmd = srt_install_command()
    if not install:
        raise AnchorUnavailable(
            f"srt-live-transmit is not installed; install it with: {shlex.join(cmd)}"
        )
    if shutil.which("apt-get") is None:
        raise AnchorUnavailable("srt-live-transmit is not installed and apt-get is not available")
    say(f"installing SRT tools: {shlex.join(cmd)}")
    _run_installer(cmd, "srt-tools", env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if shutil.which("srt-live-transmit") is None:
        raise AnchorUnavailable(f"srt-live-transmit is still missing after: {shlex.join(cmd)}")


def _run_installer(cmd: list[str], what: str, env: dict[str, str] | None) -> None:
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise AnchorUnavailable(
            f"installing {what} took longer than {INSTALL_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise AnchorUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise AnchorUnavailable(
            f"installing {what} failed (exit {done.returncode}): {_last_error(done)}"
        )


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    """The line of an installer's output that says what went wrong."""
    lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("ERROR", "E:")):
            return line
    return lines[-1] if lines else "no output"


def _can_import(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- the relay ----------------------------------------------------------------------------------


# -- aiortc -------------------------------------------------------------------------------------

_CHANNELS: Final[dict[str, dict[str, Any]]] = {
    "unreliable": {"ordered": False, "maxRetransmits": 0},
    "reliable": {"ordered": True},
}


def run_aiortc(
    relay_options: Sequence[str],
    *,
    seed: int,
    duration_s: float,
    say: Callable[[str], None],
    workload: MessageWorkload = DEFAULT_MESSAGES,
    timing: AnchorTiming = DEFAULT_TIMING,
) -> list[dict[str, Any]]:
    """aiortc data channels through the relay: rows ``unreliable`` (unordered, no
    retransmissions) and ``reliable`` (ordered, reliable), carried side by side on one SCTP
    association. Latency runs from ``send()`` to the answerer's ``message`` event; only
    messages sent once both channels are open at both ends count.

    Blocking (it runs its own event loop): call it from synchronous code. Raises
    AnchorUnavailable when aiortc is missing, does not connect, times out or bypasses the
    relay; BenchError when the relay cannot start."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    ensure_installed("aiortc", install=False, say=say)
    limit_s = duration_s + OVERALL_SLACK_S
    session = _AiortcSession(relay_options, seed, duration_s, say, workload, timing)
    try:
        asyncio.run(asyncio.wait_for(session.run(), limit_s))
    except TimeoutError:
        raise AnchorUnavailable(f"aiortc: no result within {limit_s:.0f} s") from None
    except (ConnectionError, OSError) as exc:
        raise AnchorUnavailable(f"aiortc: {type(exc).__name__}: {exc}") from None
    if session.relay_summary is None:
        raise AnchorUnavailable("aiortc: the relay gave no summary")
    say(f"aiortc: {relay_line(session.relay_summary)}")
    sent = sum(len(times) for times in session.send_ns.values())
    check_relay_carried(session.relay_summary, expected_forward=sent, what="aiortc")
    return [
        build_row("aiortc", name, times, session.latency_ns[name][: len(times)])
        for name, times in session.send_ns.items()
    ]


def _loopback_hosts(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Stands in for ``aioice.ice.get_host_addresses`` (same signature) during a run."""
    return [LOOPBACK]


class _AiortcSession:
    """An offerer and an answerer in this event loop, the relay between them."""

    def __init__(
        self,
        relay_options: Sequence[str],
        seed: int,
        duration_s: float,
        say: Callable[[str], None],
        workload: MessageWorkload,
        timing: AnchorTiming,
    ) -> None:
        self.relay_options = tuple(relay_options)
        self.seed = seed
        self.duration_s = duration_s
        self.say = say
        self.workload = workload
        self.timing = timing
        capacity = math.ceil(duration_s * workload.rate_hz) + 1
        self.send_ns: dict[str, list[int]] = {name: [] for name in _CHANNELS}
        self.latency_ns: dict[str, list[int | None]] = {n: [None] * capacity for n in _CHANNELS}
        self.delivered = dict.fromkeys(_CHANNELS, 0)
        self.answerer_open: set[str] = set()
        self.relay: RelayProcess | None = None
        self.relay_summary: dict[str, Any] | None = None

    async def run(self) -> None:
        # aiortc and aioice ship no type information: both are used as Any.
        aiortc: Any = importlib.import_module("aiortc")
        ice: Any = importlib.import_module("aioice.ice")
        # aioice gathers a host candidate on every interface except 127.0.0.1. This run must
        # stay on loopback, so it gathers exactly one, there. No STUN or TURN either: an
        # empty server list (None would mean aiortc's default public STUN server).
        original_hosts = getattr(ice, "get_host_addresses", None)
        if original_hosts is None:
            raise AnchorUnavailable(
                f"aiortc: aioice {_installed_version('aioice')} has no get_host_addresses, "
                "so this run cannot keep ICE on loopback"
            )
        ice.get_host_addresses = _loopback_hosts
        peers: list[Any] = []
        try:
            config = aiortc.RTCConfiguration(iceServers=[])
            offerer = aiortc.RTCPeerConnection(configuration=config)
            peers.append(offerer)
            answerer = aiortc.RTCPeerConnection(configuration=config)
            peers.append(answerer)
            channels = await self._connect(aiortc, offerer, answerer)
            self.say(f"aiortc: channels open; sending for {self.duration_s:g} s")
            await self._send(channels)
            await self._drain()
        finally:
            for pc in peers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), self.timing.stop_timeout_s)
            ice.get_host_addresses = original_hosts
            if self.relay is not None:
                self.relay_summary = await asyncio.to_thread(
                    self.relay.stop, self.timing.stop_timeout_s
                )

    async def _connect(self, aiortc: Any, offerer: Any, answerer: Any) -> dict[str, Any]:
        channels = {name: offerer.createDataChannel(name, **o) for name, o in _CHANNELS.items()}
        answerer.on("datachannel", self._on_datachannel)
        await offerer.setLocalDescription(await offerer.createOffer())
        gathered = candidate_addresses(offerer.localDescription.sdp)
        if not gathered or any(host != LOOPBACK for host, _ in gathered):
            raise AnchorUnavailable(f"aiortc: ICE gathered {gathered}, not only {LOOPBACK}")
        offer = strip_candidates(offerer.localDescription.sdp)
        await answerer.setRemoteDescription(aiortc.RTCSessionDescription(sdp=offer, type="offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = answerer.localDescription.sdp
        ports = {port for host, port in candidate_addresses(answer) if host == LOOPBACK}
        if len(ports) != 1:
            raise AnchorUnavailable(f"aiortc: expected one loopback candidate, got {ports}")
        target = (LOOPBACK, ports.pop())
        self.relay = await asyncio.to_thread(
            RelayProcess, target, self.relay_options, seed=self.seed, listen=(LOOPBACK, 0)
        )
        relay_at = self.relay.addr
        self.say(f"aiortc: offerer → relay {relay_at[0]}:{relay_at[1]} → answerer {target[1]}")
        # The offerer's only remote candidate is the relay; the relay forwards to the
        # answerer's real port from an upstream socket the answerer learns as peer-reflexive.
        routed = route_candidates(answer, relay_at)
        await offerer.setRemoteDescription(aiortc.RTCSessionDescription(sdp=routed, type="answer"))
        end = time.monotonic() + self.timing.setup_timeout_s
        while not (
            all(ch.readyState == "open" for ch in channels.values())
            and self.answerer_open == set(_CHANNELS)
        ):
            if time.monotonic() >= end:
                raise AnchorUnavailable(
                    f"aiortc: data channels did not open within "
                    f"{self.timing.setup_timeout_s:g} s through the relay"
                )
            await asyncio.sleep(self.timing.poll_interval_s)
        return channels

    def _on_datachannel(self, channel: Any) -> None:
        name = channel.label
        if name not in _CHANNELS:
            return
        latency = self.latency_ns[name]

        def on_message(message: bytes | str) -> None:
            now = time.monotonic_ns()
            decoded = decode_message(message)
            if decoded is None:
                return
            seq, send_ns = decoded
            if seq < len(latency) and latency[seq] is None and now >= send_ns:
                latency[seq] = now - send_ns
                self.delivered[name] += 1

        channel.on("message", on_message)
        self.answerer_open.add(name)

    async def _send(self, channels: dict[str, Any]) -> None:
        period_s = 1.0 / self.workload.rate_hz
        count = min(
            math.ceil(self.duration_s * self.workload.rate_hz), len(self.latency_ns["reliable"])
        )
        buffers = {name: bytearray(self.workload.message_bytes) for name in channels}
        start = time.monotonic()
        for seq in range(count):
            delay = start + seq * period_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for name, channel in channels.items():
                now = time.monotonic_ns()
                channel.send(encode_message(buffers[name], seq, now))
                self.send_ns[name].append(now)

    async def _drain(self) -> None:
        end = time.monotonic() + self.timing.drain_s
        while time.monotonic() < end and any(
            self.delivered[name] < len(self.send_ns[name]) for name in _CHANNELS
        ):
            await asyncio.sleep(self.timing.poll_interval_s)


# -- SRT ----------------------------------------------------------------------------------------


def run_srt(
    relay_options: Sequence[str],
    *,
    seed: int,
    duration_s: float,
    latency_ms: int,
    say: Callable[[str], None],
    workload: VideoWorkload = DEFAULT_VIDEO,
    timing: AnchorTiming = DEFAULT_TIMING,
) -> list[dict[str, Any]]:
    """SRT (live mode, ``latency_ms``) carrying the ``video`` workload through the relay:
    probe → UDP → srt-live-transmit (caller) → relay → srt-live-transmit (listener) → UDP →
    probe. A frame's latency runs from its first chunk's send to its last chunk's arrival; a
    frame missing any chunk is lost.

    Raises AnchorUnavailable when srt-live-transmit is missing, exits, does not connect,
    times out or bypasses the relay; BenchError when the relay cannot start."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be non-negative, got {latency_ms}")
    ensure_installed("srt", install=False, say=say)
    exe = shutil.which("srt-live-transmit")
    assert exe is not None  # ensure_installed checked it
    deadline = time.monotonic() + duration_s + OVERALL_SLACK_S
    summaries: list[dict[str, Any] | None] = []
    # The stack unwinds in reverse: the caller stops first, then the relay (keeping its
    # summary), the listener, the probe's sockets and the log folder.
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fw-srt-")))
        probe = stack.enter_context(_VideoProbe(workload, timing))
        input_port, listen_port = _free_udp_ports(2)
        listener_log = logs / "listener.log"
        listener = stack.enter_context(
            _child(
                [exe, srt_listener_uri(listen_port, latency_ms), udp_output_uri(probe.port)],
                listener_log,
                timing.stop_timeout_s,
            )
        )
        _wait_until(
            lambda: _udp_port_bound(listen_port),
            deadline=min(deadline, time.monotonic() + timing.setup_timeout_s),
            timing=timing,
            failed=lambda: _exited(listener, "the SRT listener", listener_log),
            what=f"srt: the listener did not bind port {listen_port}",
        )
        relay = RelayProcess(
            (LOOPBACK, listen_port), relay_options, seed=seed, listen=(LOOPBACK, 0)
        )
        stack.callback(lambda: summaries.append(relay.stop(timing.stop_timeout_s)))
        caller_log = logs / "caller.log"
        caller = stack.enter_context(
            _child(
                [exe, udp_input_uri(input_port), srt_caller_uri(relay.addr, latency_ms)],
                caller_log,
                timing.stop_timeout_s,
            )
        )
        say(
            f"srt: probe → udp {input_port} → caller → relay {relay.addr[1]} → listener "
            f"{listen_port} → probe {probe.port} (latency={latency_ms} ms)"
        )
        target = (LOOPBACK, input_port)

        def failed() -> str | None:
            return _exited(caller, "the SRT caller", caller_log) or _exited(
                listener, "the SRT listener", listener_log
            )

        probe.warm_up(target, min(deadline, time.monotonic() + timing.setup_timeout_s), failed)
        say(
            f"srt: connected; {workload.chunks_per_frame} chunks x {workload.fps:g} frames/s "
            f"for {duration_s:g} s"
        )
        drain_s = timing.drain_s + latency_ms / 1000
        send_ns, latency_ns = probe.measure(target, duration_s, drain_s, deadline, failed)
    if not summaries or summaries[0] is None:
        raise AnchorUnavailable("srt: the relay gave no summary")
    say(f"srt: {relay_line(summaries[0])}")
    chunks = len(send_ns) * workload.chunks_per_frame
    check_relay_carried(summaries[0], expected_forward=chunks, what="srt")
    return [build_row("srt", "video", send_ns, latency_ns)]


class _VideoProbe:
    """The probe's two loopback sockets: one sends chunks into SRT, one receives them."""

    def __init__(self, workload: VideoWorkload, timing: AnchorTiming) -> None:
        self.workload = workload
        self.timing = timing
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.rx.bind((LOOPBACK, 0))
            self.rx.setblocking(False)
            self.tx.bind((LOOPBACK, 0))
        except OSError:
            self.close()
            raise
        self.port: int = self.rx.getsockname()[1]
        self._buffer = bytearray(workload.chunk_bytes)

    def __enter__(self) -> _VideoProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rx.close()
        self.tx.close()

    def warm_up(self, target: Address, end: float, failed: Callable[[], str | None]) -> None:
        """Send warm-up chunks until one comes out of SRT (the handshake is done)."""
        next_probe = 0.0
        while True:
            now = time.monotonic()
            if (message := failed()) is not None:
                raise AnchorUnavailable(message)
            if now >= end:
                raise AnchorUnavailable(
                    "srt: no data came through the SRT link within "
                    f"{self.timing.setup_timeout_s:g} s"
                )
            if now >= next_probe:
                self._send_chunk(target, WARMUP_FRAME, 0, 1)
                next_probe = now + 0.05
            if self._wait_readable(min(next_probe, end) - now) and any(
                chunk[0] == WARMUP_FRAME for chunk, _ in self._read()
            ):
                return

    def measure(
        self,
        target: Address,
        duration_s: float,
        drain_s: float,
        deadline: float,
        failed: Callable[[], str | None],
    ) -> tuple[list[int], list[int | None]]:
        """Send ``duration_s`` of frames, one burst per frame period, and collect them."""
        frames = max(1, math.floor(duration_s * self.workload.fps))
        chunks = self.workload.chunks_per_frame
        period_s = 1.0 / self.workload.fps
        assembly = FrameAssembly(frames)
        send_ns: list[int] = []
        start = time.monotonic()
        drain_end = math.inf
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise AnchorUnavailable("srt: no result before the overall time limit")
            if len(send_ns) < frames:
                due = start + len(send_ns) * period_s
                if now >= due:
                    if (message := failed()) is not None:
                        raise AnchorUnavailable(message)
                    frame = len(send_ns)
                    send_ns.append(self._send_chunk(target, frame, 0, chunks))
                    for index in range(1, chunks):
                        self._send_chunk(target, frame, index, chunks)
                    if len(send_ns) == frames:
                        drain_end = time.monotonic() + drain_s
                    continue
                wake = due
            else:
                if assembly.complete == frames or now >= drain_end:
                    break
                if (message := failed()) is not None:
                    raise AnchorUnavailable(message)
                wake = min(drain_end, now + 0.1)
            if self._wait_readable(wake - now):
                for (frame, index, count, sent), arrival in self._read():
                    assembly.add(frame, index, count, sent, arrival)
        return send_ns, assembly.latency_ns()

    def _send_chunk(self, target: Address, frame: int, index: int, count: int) -> int:
        now = time.monotonic_ns()
        CHUNK_HEADER.pack_into(self._buffer, 0, CHUNK_MAGIC, frame, index, count, now)
        with contextlib.suppress(OSError):  # a full buffer: the chunk is lost, as on a link
            self.tx.sendto(self._buffer, target)
        return now

    def _wait_readable(self, timeout_s: float) -> bool:
        readable, _, _ = select.select([self.rx], [], [], max(0.0, timeout_s))
        return bool(readable)

    def _read(self) -> list[tuple[tuple[int, int, int, int], int]]:
        """Every chunk waiting on the socket, each with its arrival time."""
        out: list[tuple[tuple[int, int, int, int], int]] = []
        while True:
            try:
                data = self.rx.recv(2048)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                continue  # an ICMP error from the other end surfaces here: UDP carries on
            arrival = time.monotonic_ns()
            if (chunk := decode_chunk(data)) is not None:
                out.append((chunk, arrival))


@contextlib.contextmanager
def _child(cmd: list[str], log: Path, stop_timeout_s: float) -> Iterator[subprocess.Popen[bytes]]:
    """A child process writing to ``log``; SIGTERM (then SIGKILL) on leaving."""
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except OSError as exc:
            raise AnchorUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _exited(proc: subprocess.Popen[bytes], name: str, log: Path) -> str | None:
    """A one-line reason if ``proc`` has exited, else ``None``."""
    code = proc.poll()
    if code is None:
        return None
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    return f"srt: {name} exited ({code}): {lines[-1] if lines else 'no output'}"


def _wait_until(
    condition: Callable[[], bool],
    *,
    deadline: float,
    timing: AnchorTiming,
    failed: Callable[[], str | None],
    what: str,
) -> None:
    while not condition():
        if (message := failed()) is not None:
            raise AnchorUnavailable(message)
        if time.monotonic() >= deadline:
            raise AnchorUnavailable(what)
        time.sleep(timing.poll_interval_s)


def _free_udp_ports(count: int) -> list[int]:
    """Distinct UDP ports on loopback that were free a moment ago (for children to bind).
    All are held open until all are picked, so the kernel cannot hand out one twice."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _udp_port_bound(port: int) -> bool:
    """Whether some socket is bound to UDP ``port`` (Linux ``/proc/net/udp``; elsewhere,
    True: the warm-up then waits for the link instead)."""
    try:
        table = Path("/proc/net/udp").read_text()
    except OSError:
        return True
    suffix = f":{port:04X}"
    return any(
        fields[1].endswith(suffix)
        for fields in (line.split() for line in table.splitlines()[1:])
        if len(fields) > 1
    )
