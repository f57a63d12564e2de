"""``send`` and ``receive``: the video pipelines of :mod:`stream` wired to a transport session.

Channel use on the session (both peers use the default layout of :mod:`transport.config`):

- sender -> receiver: video frames only, on :data:`VIDEO_CHANNEL` with a deadline;
- receiver -> sender: control messages only, on :data:`CONTROL_CHANNEL` (reliable): today just
  :data:`KEYFRAME_REQUEST`.

Each side iterates its session for what the other sends, so the directions never mix: the
receiver's :class:`VideoReceiver` sees only video (and ignores any other channel), the sender's
control task sees only control messages (and ignores anything it does not know).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import transport
from framewire.errors import CommandError
from stream import (
    DecodedPicture,
    DiscardSink,
    EncoderConfig,
    FileSink,
    FileSource,
    H264Decoder,
    H264Encoder,
    SenderStats,
    StreamUsageError,
    SyntheticSource,
    VideoReceiver,
    VideoSender,
)
from stream.jitter import JitterBuffer
from stream.pipeline import KEYFRAME_REQUEST, KEYFRAME_REQUEST_DEADLINE_S, VIDEO_MAX_RTO_S
from transport import AsyncListener, AsyncSession, Closed, LinkStats, SessionConfig, SessionStats
from transport.config import RELIABLE, UNRELIABLE

__all__ = [
    "CONTROL_CHANNEL",
    "KEYFRAME_REQUEST",
    "VIDEO_CHANNEL",
    "ReceiveOptions",
    "SendOptions",
    "format_addr",
    "receive",
    "send",
]

Address = tuple[str, int]
Progress = Callable[[dict[str, Any]], None]

# Video rides the RELIABLE channel with a per-frame deadline, not the UNRELIABLE one.
# A 720p frame at 4 Mbit/s is about 14 datagrams (a keyframe 50-100): unreliable, one lost
# datagram loses the whole frame, every following P-frame is undecodable until a keyframe
# arrives, and that big keyframe is the frame likeliest to lose a datagram. Measured through
# a lossy UDP relay on 127.0.0.1 (random loss both ways, 720p30, 4 Mbit/s, 10 s, uvloop):
#
#   loss  channel     decoded/sent  keyframe requests  frame latency p50 / p99
#   0 %   reliable    300/300        0                  8.1 / 45 ms (29 repairs: the relay
#         unreliable  292/300        4                  8.8 / 20 ms  drops bursts itself)
#   1 %   reliable    300/300        0                  8.3 / 33 ms (48 retransmissions)
#         unreliable  185/300       19                  8.0 / 26 ms
#   5 %   reliable    300/300        0                 10.1 / 49 ms (229 retransmissions)
#         unreliable   17/300       19                  9.7 / 26 ms
#
# A repair costs about one RTT plus loss detection, far less than a frame interval on a LAN,
# so it wins by a wide margin. The deadline bounds what repair may cost: past it the sender
# abandons the frame, the receiver skips it (head-of-line blocking ends there) and asks for
# a keyframe. Links whose RTT nears the frame interval would want FEC instead.
VIDEO_CHANNEL = RELIABLE
CONTROL_CHANNEL = RELIABLE
DEFAULT_FRAME_DEADLINE_S = 0.1
"""Three frame intervals at 30 fps: room for a repair or two at LAN round-trip times."""
CLOSE_TIMEOUT_S = 3.0
"""Bound on a graceful close (the engine itself gives up flushing after 2 s)."""
STATS_INTERVAL_S = 1.0
AUTO_MAX_BPS = 8_000_000
"""``--bitrate auto``: the encoder's ceiling."""
AUTO_VBV_S = 0.25
"""``--bitrate auto``: VBV buffer in seconds of the current rate, which bounds a keyframe."""

CHANNEL_NAMES = {RELIABLE: "reliable", UNRELIABLE: "unreliable"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SendOptions:
    """What ``framewire send`` does; validated by the argument parser."""

    to: Address
    seconds: float | None
    """None: until interrupted or the receiver closes the session."""
    width: int
    height: int
    fps: float
    bitrate_bps: int | None
    """None: follow the transport's delay-based rate control (gcc), up to AUTO_MAX_BPS."""
    frame_deadline_s: float = DEFAULT_FRAME_DEADLINE_S
    video_channel: int = VIDEO_CHANNEL
    source: str = "testsrc"
    """``testsrc`` or the path of a video file."""
    loop: bool = False
    """A file source starts again at its end."""
    scale: bool = True
    """A file source is scaled to width x height (else it keeps its own size and rate)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveOptions:
    """What ``framewire receive`` does; validated by the argument parser."""

    listen: Address
    seconds: float | None
    """Counted from the moment a sender connects; None: until the sender closes."""
    accept_timeout_s: float | None = None
    video_channel: int = VIDEO_CHANNEL
    frame_log: bool = False
    """Add ``frame_log`` (index, latency ms per decoded frame) to the result."""
    jitter: str = "smooth"
    """The jitter buffer's mode: realtime, smooth or fixed:MS."""
    sink: str = "discard"
    """``discard`` or the path of a video file to write."""
    sink_fps: float = 30.0


def format_addr(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(addr: Address) -> Address:
    """An IP literal as it is; a name through the resolver (the engines compare addresses,
    and ``sendto`` with a name would resolve it again for every datagram)."""
    host, port = addr
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return addr
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise CommandError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    if not infos:
        raise CommandError(f"cannot resolve {host!r}")
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])


def _why(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _srtt_ms(stats: SessionStats) -> float | None:
    """Smoothed RTT, or None while there is no sample: the engine then reports its initial
    guess (100 ms), and a receiver that only sends ACKs never takes a sample."""
    return None if stats.min_rtt_ms is None else _r(stats.srtt_ms)


def _session_dict(stats: SessionStats, closed: Closed | None) -> dict[str, Any]:
    return {
        "srtt_ms": _srtt_ms(stats),
        "rttvar_ms": _r(stats.rttvar_ms),
        "min_rtt_ms": _r(stats.min_rtt_ms),
        "packets_sent": stats.packets_sent,
        "packets_received": stats.packets_received,
        "packets_lost": stats.packets_lost,
        "retransmissions": stats.retransmissions,
        "messages_late": stats.messages_late,
        "messages_expired": stats.messages_expired,
        "messages_dropped": stats.messages_dropped,
        "decode_failures": stats.decode_failures,
        "ended": None
        if closed is None
        else {"reason": closed.reason, "code": closed.code, "by_peer": closed.by_peer},
    }


def link_dict(link: LinkStats) -> dict[str, Any]:
    """``stats().link`` as JSON, rounded for people (docs/LINK.md defines each field)."""
    out: dict[str, Any] = {}
    for name, value in dataclasses.asdict(link).items():
        if isinstance(value, float):
            value = round(value, 3)
        elif isinstance(value, dict):
            value = {k: round(v, 3) for k, v in value.items()}
        out[name] = value
    return out


def _ended_normally(closed: Closed | None) -> bool:
    return closed is None or closed.code == transport.CloseCode.NORMAL


async def _close(session: AsyncSession, reason: str) -> None:
    """Close gracefully if still open, within :data:`CLOSE_TIMEOUT_S`; never raises."""
    if session.closed is not None:
        return
    with contextlib.suppress(TimeoutError, transport.TransportError):
        await asyncio.wait_for(session.close(reason), CLOSE_TIMEOUT_S)


async def _close_listener(listener: AsyncListener, reason: str) -> None:
    with contextlib.suppress(TimeoutError, transport.TransportError):
        await asyncio.wait_for(listener.close(reason), CLOSE_TIMEOUT_S)


# -- receive -----------------------------------------------------------------------------------


async def receive(
    options: ReceiveOptions,
    *,
    on_ready: Callable[[Address], None],
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Listen, accept one sender, receive and decode its video until it closes the session
    (or ``options.seconds`` pass); return the result as a JSON-ready dict.

    ``result["error"]`` is set when the session ended abnormally (idle timeout, peer error).
    """
    listen_addr = await resolve(options.listen)
    try:
        listener = await transport.listen(listen_addr, SessionConfig())
    except OSError as exc:
        raise CommandError(f"cannot listen on {format_addr(listen_addr)}: {_why(exc)}") from exc
    reason = "interrupted"  # what the sender is told if we leave by an exception
    try:
        on_ready(listener.local_addr)
        try:
            session = await asyncio.wait_for(listener.accept(), options.accept_timeout_s)
        except TimeoutError:
            seconds = options.accept_timeout_s
            raise CommandError(f"no sender connected within {seconds:g} s") from None
        result = await _receive_video(session, options, on_progress)
        result["listen"] = format_addr(listener.local_addr)
        reason = "done"
        return result
    finally:
        await _close_listener(listener, reason)


async def _receive_video(
    session: AsyncSession, options: ReceiveOptions, on_progress: Progress | None
) -> dict[str, Any]:
    def request_keyframe() -> None:
        # A failure means the session is ending: there is nothing left to recover.
        with contextlib.suppress(transport.TransportError):
            session.send(
                KEYFRAME_REQUEST, channel=CONTROL_CHANNEL, deadline_s=KEYFRAME_REQUEST_DEADLINE_S
            )

    sink: DiscardSink | FileSink = (
        DiscardSink() if options.sink == "discard" else FileSink(options.sink, options.sink_fps)
    )
    jitter: JitterBuffer[DecodedPicture] = JitterBuffer(options.jitter)
    receiver = VideoReceiver(
        session,
        H264Decoder(),
        sink,
        channel=options.video_channel,
        on_keyframe_needed=request_keyframe,
        jitter=jitter,
    )

    def follow_path() -> None:
        """The empty path's one-way delay for the buffer: half the session's minimum RTT."""
        min_rtt_ms = session.stats().link.min_rtt_ms
        if min_rtt_ms is not None:
            jitter.path_delay_s = min_rtt_ms / 2000

    start = time.monotonic()

    async def report() -> None:
        assert on_progress is not None
        last_t, last_frames = start, 0
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            now = time.monotonic()
            follow_path()
            frames = receiver.stats(recent=0).frames_received
            window = receiver.stats(recent=frames - last_frames)
            link = session.stats()
            on_progress(
                {
                    "t_s": round(now - start, 2),
                    "fps": round((frames - last_frames) / (now - last_t), 2),
                    "frames_received": frames,
                    "frames_decoded": window.frames_decoded,
                    "frames_missing": window.frames_missing,
                    "frame_latency_ms_p50": window.frame_latency_ms["p50"],
                    "playout_delay_ms_p50": window.playout_delay_ms.get("p50"),
                    "late_frames": window.late_frames,
                    "link": link.link.quality,
                    "transport_ms_p50": window.transport_latency_ms["p50"],
                    "srtt_ms": _srtt_ms(link),
                    "packets_lost": link.packets_lost,
                }
            )
            last_t, last_frames = now, frames

    reporter = asyncio.ensure_future(report()) if on_progress is not None else None
    try:
        stats = await receiver.run(options.seconds)
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        if isinstance(sink, FileSink):
            sink.close()
    elapsed = time.monotonic() - start
    kbps = stats.bytes_received * 8 / elapsed / 1000 if elapsed > 0 else None
    closed = session.closed
    await _close(session, "done")  # we stopped first (--seconds): tell the sender
    ended = closed if closed is not None else session.closed
    result: dict[str, Any] = {
        "role": "receive",
        "peer": format_addr(session.peer_addr),
        "seconds": round(elapsed, 3),
        "fps": round(stats.frames_received / elapsed, 2) if elapsed > 0 else None,
        "video_channel": CHANNEL_NAMES.get(options.video_channel, str(options.video_channel)),
        "frames_received": stats.frames_received,
        "frames_decoded": stats.frames_decoded,
        "frames_missing": stats.frames_missing,
        "frames_late": stats.frames_late,
        "frames_invalid": stats.frames_invalid,
        "decode_errors": stats.decode_errors,
        "keyframes_received": stats.keyframes_received,
        "keyframe_requests": stats.keyframe_requests,
        "frames_skipped": stats.frames_skipped,
        "messages_ignored": stats.messages_ignored,
        "bytes_received": stats.bytes_received,
        "bitrate_kbps": _r(kbps, 1),
        "frame_latency_ms": stats.frame_latency_ms,
        "glass_to_glass_ms": stats.pixel_latency_ms,
        "stamp_error_ms": stats.stamp_error_ms,
        "jitter": stats.jitter,
        "playout_delay_ms": stats.playout_delay_ms,
        "late_frames": stats.late_frames,
        "stalls": stats.stalls,
        "stall_ms": stats.stall_ms,
        "transport_ms": stats.transport_latency_ms,
        "decode_ms": stats.decode_ms,
        **({"frame_log": receiver.frame_log()} if options.frame_log else {}),
        "session": _session_dict(session.stats(), ended),
        "link": link_dict(session.stats().link),
        "error": None if _ended_normally(closed) else f"session ended: {closed and closed.reason}",
    }
    return result


# -- send --------------------------------------------------------------------------------------


async def send(options: SendOptions, *, on_progress: Progress | None = None) -> dict[str, Any]:
    """Connect, send the synthetic test pattern for ``options.seconds``, close ("done");
    return the result as a JSON-ready dict.

    Raises :class:`transport.TransportError` (no listener, session lost) and ValueError.
    """
    # Built before connecting: a file or size the source or encoder refuses fails without
    # traffic.
    source: SyntheticSource | FileSource
    if options.source == "testsrc":
        source = SyntheticSource(options.width, options.height, options.fps)
    else:
        try:
            source = FileSource(
                options.source,
                loop=options.loop,
                size=(options.width, options.height) if options.scale else None,
            )
        except StreamUsageError as exc:
            raise CommandError(f"send: --source: {exc}") from None
    encoder = H264Encoder(
        EncoderConfig(
            width=source.width,
            height=source.height,
            fps=1 / source.interval_s,
            bitrate_bps=AUTO_MAX_BPS if options.bitrate_bps is None else options.bitrate_bps,
            # auto: keyframes bounded by a quarter second of the rate (the VBV follows it)
            vbv_buffer_s=AUTO_VBV_S if options.bitrate_bps is None else 0.5,
            intra_refresh=options.bitrate_bps is None,
        )
    )
    addr = await resolve(options.to)
    auto = options.bitrate_bps is None
    # Probe at least every VIDEO_MAX_RTO_S through an outage, so the stream resumes that soon
    # after the link returns (the default backs off to 2 s).
    config = SessionConfig(congestion="gcc" if auto else "newreno", max_rto_s=VIDEO_MAX_RTO_S)
    try:
        session = await transport.connect(addr, config)
    except transport.HandshakeTimeoutError as exc:
        raise CommandError(
            f"no receiver answered at {format_addr(addr)} within "
            f"{config.handshake_timeout_s:g} s (handshake timeout)"
        ) from exc
    except OSError as exc:
        raise CommandError(f"cannot connect to {format_addr(addr)}: {_why(exc)}") from exc
    try:
        return await _send_video(session, source, encoder, options, on_progress)
    finally:
        await _close(session, "interrupted")  # no-op after the normal close


async def _send_video(
    session: AsyncSession,
    source: SyntheticSource | FileSource,
    encoder: H264Encoder,
    options: SendOptions,
    on_progress: Progress | None,
) -> dict[str, Any]:
    sender = VideoSender(
        session,
        source,
        encoder,
        channel=options.video_channel,
        frame_deadline_s=options.frame_deadline_s,
        bitrate=(lambda: session.target_bitrate_bps) if options.bitrate_bps is None else None,
    )
    control = {"keyframe_requests": 0, "ignored": 0}

    async def serve_control() -> None:
        async for message in session:
            if message.channel == CONTROL_CHANNEL and message.data == KEYFRAME_REQUEST:
                sender.request_keyframe()
                control["keyframe_requests"] += 1
            else:
                control["ignored"] += 1

    start = time.monotonic()
    last = {"t": start, "frames": 0, "bytes": 0}

    def on_stats(totals: SenderStats) -> None:
        assert on_progress is not None
        now = time.monotonic()
        dt = now - last["t"]
        frames = totals.frames_sent - int(last["frames"])
        window = sender.stats(recent=frames)
        link = session.stats()
        on_progress(
            {
                "t_s": round(now - start, 2),
                "fps": round(frames / dt, 2),
                "frames_sent": totals.frames_sent,
                "bitrate_kbps": round((totals.bytes_sent - last["bytes"]) * 8 / dt / 1000, 1),
                "encoder_kbps": round(totals.encoder_bitrate_bps / 1000),
                "encode_ms_p50": window.encode_ms["p50"],
                "keyframes_sent": totals.keyframes_sent,
                "srtt_ms": _srtt_ms(link),
                "packets_lost": link.packets_lost,
                "retransmissions": link.retransmissions,
                "link": link.link.quality,
                "loss_pct": round(link.link.loss_pct, 2),
            }
        )
        last.update(t=now, frames=totals.frames_sent, bytes=totals.bytes_sent)

    control_task = asyncio.ensure_future(serve_control())
    seconds = math.inf if options.seconds is None else options.seconds
    try:
        try:
            stats = await sender.run(seconds, on_stats if on_progress is not None else None)
        except (transport.SessionClosedError, transport.UsageError):
            # The receiver closing normally (its --seconds ran out) ends the run; anything
            # else (idle timeout, a peer error, a send refused while open) is a failure.
            if session.closed is None or not _ended_normally(session.closed):
                raise
            stats = sender.stats()
        elapsed = time.monotonic() - start
        closed_by_peer = session.closed
        await _close(session, "done")
    finally:
        control_task.cancel()
        await asyncio.gather(control_task, return_exceptions=True)
    ended = closed_by_peer if closed_by_peer is not None else session.closed
    return {
        "role": "send",
        "to": format_addr(session.peer_addr),
        "size": f"{source.width}x{source.height}",
        "source": options.source,
        "fps_target": options.fps,
        "bitrate_target_kbps": "auto"
        if options.bitrate_bps is None
        else options.bitrate_bps / 1000,
        "encoder_bitrate_kbps": round(stats.encoder_bitrate_bps / 1000),
        "video_channel": CHANNEL_NAMES.get(options.video_channel, str(options.video_channel)),
        "frame_deadline_s": options.frame_deadline_s,
        "seconds": round(elapsed, 3),
        "fps": round(stats.frames_sent / elapsed, 2) if elapsed > 0 else None,
        "frames_sent": stats.frames_sent,
        "keyframes_sent": stats.keyframes_sent,
        "keyframe_requests_received": control["keyframe_requests"],
        "control_ignored": control["ignored"],
        "bytes_sent": stats.bytes_sent,
        "bitrate_kbps": round(stats.bytes_sent * 8 / elapsed / 1000, 1) if elapsed > 0 else None,
        "ticks_skipped": stats.ticks_skipped,
        "encode_ms": stats.encode_ms,
        "tick_late_ms": stats.tick_late_ms,
        "session": _session_dict(session.stats(), ended),
        "link": link_dict(session.stats().link),
    }
