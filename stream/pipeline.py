"""The sender and receiver halves of a video stream, written against a small transport API.

Sender: source -> encoder -> :func:`pack_frame` -> ``transport.send``, one frame per tick of
an absolute clock. Receiver: messages -> :func:`unpack_frame` -> decoder -> sink, measuring
message latency (``send()`` to delivery), decode time and frame latency (capture to sink).

Latencies compare ``time.monotonic_ns()`` values from both ends, so they are only meaningful
when both halves run on one machine, until a clock offset from the session is applied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from stream.codec import DecodedPicture, H264Decoder, H264Encoder
from stream.errors import FrameDecodeError, SourceEnded, StreamUsageError
from stream.frames import EncodedFrame, pack_frame, unpack_frame
from stream.jitter import FrameReleased, JitterBuffer
from stream.sink import Sink
from stream.source import VideoSource
from stream.stamp import read_time
from stream.stats import percentiles

__all__ = [
    "FrameTransport",
    "MessageLike",
    "ReceiverStats",
    "SenderStats",
    "VideoReceiver",
    "VideoSender",
]

# Timing samples kept for percentiles: the most recent ones only, so memory stays bounded on
# long runs (10,000 frames is about 5.5 minutes at 30 fps).
DEFAULT_MAX_SAMPLES = 10_000

VIDEO_SHARE = 0.85
"""The encoder's share of the transport's target bitrate: the rest is for the frame and
packet headers, parity and repairs (bench.recovery: parity costs up to 20 % at 5 % loss)."""
BITRATE_STEP = 0.05
"""The encoder is retargeted when the wanted rate moved by more than this share."""
KEYFRAME_REQUEST = b"KEY"
"""What a receiver sends back (on a reliable control channel) to ask for a keyframe."""
KEYFRAME_REQUEST_DEADLINE_S = 1.0
"""A request older than this is stale: the receiver asks again every 0.5 s while it waits."""
VIDEO_MAX_RTO_S = 0.25
"""For a video session's ``SessionConfig.max_rto_s``: through an outage the sender probes at
least this often, so the stream resumes that soon after the link returns (the default backs
off to 2 s)."""
KEYFRAME_DEADLINE_FACTOR = 4.0
"""A keyframe's deadline is this times the other frames'."""
REOPEN_HEADROOM = 2.0
"""After a reopen, the encoder's VBV peak is this times the wanted rate."""
REOPEN_BELOW = 3.0
"""Reopen when the wanted rate falls below the VBV peak divided by this (or rises above it):
the VBV bounds keyframes, so it must follow the rate, and FFmpeg cannot move it in place."""
REOPEN_MIN_S = 4.0
"""Reopens (each starts with a keyframe) at most this often."""


class MessageLike(Protocol):
    """A message delivered by the transport."""

    @property
    def data(self) -> bytes: ...

    @property
    def channel(self) -> int: ...


class FrameTransport(Protocol):
    """The part of a transport session the video pipeline uses."""

    def send(self, data: bytes, *, channel: int = 0, deadline_s: float | None = None) -> object:
        """Queue ``data`` for sending without blocking; what it returns (``AsyncSession``
        gives the message id) is not used."""
        ...

    def __aiter__(self) -> AsyncIterator[MessageLike]: ...


def _ms(ns: int) -> float:
    return ns / 1e6


def _tail(samples: deque[float], recent: int | None) -> Iterable[float]:
    """The last ``recent`` samples (all of them when None), for percentiles of a live window."""
    if recent is None or recent >= len(samples):
        return samples
    return itertools.islice(reversed(samples), max(0, recent))


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderStats:
    """Counters and timing percentiles (ms, see :func:`stream.stats.percentiles`)."""

    frames_sent: int
    keyframes_sent: int
    bytes_sent: int
    ticks_skipped: int
    """Frame ticks dropped because the loop woke more than a frame interval late."""
    encode_ms: dict[str, float | None]
    tick_late_ms: dict[str, float | None]
    """How late each tick started after its scheduled time (event-loop wake-up jitter)."""
    encoder_bitrate_bps: int = 0
    """What the encoder aims at now (it follows ``bitrate`` when one is given)."""


class VideoSender:
    """Captures, encodes and sends frames at the source's frame rate."""

    def __init__(
        self,
        transport: FrameTransport,
        source: VideoSource,
        encoder: H264Encoder,
        *,
        channel: int,
        frame_deadline_s: float | None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        bitrate: Callable[[], float | None] | None = None,
        video_share: float = VIDEO_SHARE,
        encode_in_thread: bool = True,
    ) -> None:
        if channel < 0:
            raise ValueError(f"channel must be >= 0, got {channel}")
        if frame_deadline_s is not None and not frame_deadline_s > 0:
            raise ValueError(f"frame_deadline_s must be positive or None, got {frame_deadline_s}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        config = encoder.config
        if (source.width, source.height) != (config.width, config.height):
            raise ValueError(
                f"source is {source.width}x{source.height}, "
                f"encoder expects {config.width}x{config.height}"
            )
        if not 0 < video_share <= 1:
            raise ValueError(f"video_share must be in (0, 1], got {video_share}")
        self._transport = transport
        self._source = source
        self._encoder = encoder
        self._bitrate = bitrate
        self._video_share = video_share
        self._encode_in_thread = encode_in_thread
        self._max_bps = encoder.config.bitrate_bps  # following a target never goes above
        self._reopened_at = -math.inf
        self._channel = channel
        self._deadline_s = frame_deadline_s
        self._running = False
        self._frames_sent = 0
        self._keyframes_sent = 0
        self._bytes_sent = 0
        self._ticks_skipped = 0
        self._encode_ms: deque[float] = deque(maxlen=max_samples)
        self._tick_late_ms: deque[float] = deque(maxlen=max_samples)

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe; wire the receiver's keyframe requests here."""
        self._encoder.request_keyframe()

    def stats(self, *, recent: int | None = None) -> SenderStats:
        """A snapshot of the counters since this sender was created.

        ``recent`` limits the percentiles to the last ``recent`` samples of each series (a
        live view: pass the frames sent since the previous snapshot); counters are totals.
        """
        return SenderStats(
            frames_sent=self._frames_sent,
            keyframes_sent=self._keyframes_sent,
            bytes_sent=self._bytes_sent,
            ticks_skipped=self._ticks_skipped,
            encode_ms=percentiles(_tail(self._encode_ms, recent)),
            tick_late_ms=percentiles(_tail(self._tick_late_ms, recent)),
            encoder_bitrate_bps=self._encoder.bitrate_bps,
        )

    async def run(
        self,
        seconds: float,
        on_stats: Callable[[SenderStats], None] | None = None,
        *,
        stats_interval_s: float = 1.0,
    ) -> SenderStats:
        """Send frames for ``seconds`` (or until the source ends), calling ``on_stats``
        every ``stats_interval_s``.

        Ticks are absolute (start + n * interval), so wake-up lateness does not accumulate
        into drift. When the loop falls more than a frame behind, the missed ticks are
        skipped rather than sent in a burst: a burst would only queue up behind itself.
        The picture and its encoding come from a thread (``encode_in_thread``): libx264
        releases the GIL while it works, so the transport keeps running. Measured at 720p30
        on the 2-core machine, 90 frames: the event loop's wake-up lag p99 9.4 ms and max 16
        ms with encoding on the loop, 1.8 ms and 4.6 ms with it on a thread.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if not stats_interval_s > 0:
            raise ValueError(f"stats_interval_s must be positive, got {stats_interval_s}")
        if self._running:
            raise StreamUsageError("VideoSender.run() is already running")
        self._running = True
        pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="framewire-encode")
            if self._encode_in_thread
            else None
        )
        try:
            interval = self._source.interval_s
            start = time.monotonic()
            end = start + seconds
            next_report = start + stats_interval_s
            tick = 0
            while (target := start + tick * interval) < end:
                # sleep(0) when behind still yields, so the transport gets to run.
                await asyncio.sleep(max(0.0, target - time.monotonic()))
                now = time.monotonic()
                if now - target > interval:
                    missed = int((now - target) // interval)
                    self._ticks_skipped += missed
                    tick += missed
                    target = start + tick * interval
                    if target >= end:
                        break
                self._tick_late_ms.append((now - target) * 1e3)
                try:
                    await self._send_next(pool)
                except SourceEnded:
                    break  # a file that does not loop: the stream ends with it
                tick += 1
                if on_stats is not None and now >= next_report:
                    next_report += stats_interval_s * (1 + (now - next_report) // stats_interval_s)
                    on_stats(self.stats())
        finally:
            self._running = False
            if pool is not None:
                # A cancelled run may leave one encode in flight: it finishes on its own.
                pool.shutdown(wait=False)
        return self.stats()

    def _follow_bitrate(self) -> None:
        """Aim the encoder at ``video_share`` of the transport's target, when it moved by
        more than BITRATE_STEP since the encoder last changed."""
        target = self._bitrate() if self._bitrate is not None else None
        if target is None:
            return
        encoder = self._encoder
        want = min(target * self._video_share, self._max_bps)
        peak = encoder.config.bitrate_bps
        now = time.monotonic()
        if (want > peak or want < peak / REOPEN_BELOW) and now - self._reopened_at >= (
            REOPEN_MIN_S
        ):
            encoder.reopen(int(min(self._max_bps, want * REOPEN_HEADROOM)))
            self._reopened_at = now
        current = encoder.bitrate_bps
        if abs(want - current) > BITRATE_STEP * current:
            encoder.set_bitrate(want)

    async def _send_next(self, pool: concurrent.futures.ThreadPoolExecutor | None) -> None:
        self._follow_bitrate()
        capture_ns = time.monotonic_ns()
        if pool is None:
            frames = self._capture_and_encode(capture_ns)
        else:
            loop = asyncio.get_running_loop()
            frames = await loop.run_in_executor(pool, self._capture_and_encode, capture_ns)
        self._encode_ms.append(_ms(time.monotonic_ns() - capture_ns))
        for frame in frames:
            self._send(frame)

    def _capture_and_encode(self, capture_ns: int) -> list[EncodedFrame]:
        """The picture and its encoding: runs on the encoder thread (one at a time, so the
        encoder is never used from two threads at once)."""
        yuv = self._source.frame(self._encoder.next_index, capture_ns)
        return self._encoder.encode(yuv, capture_ns)

    def _send(self, frame: EncodedFrame) -> None:
        data = pack_frame(dataclasses.replace(frame, send_ns=time.monotonic_ns()))
        deadline = self._deadline_s
        if deadline is not None and frame.keyframe:
            # A keyframe is what ends a receiver's wait after a loss, and several times the
            # size of other frames: after an outage, with the window shrunk, it needs longer.
            deadline *= KEYFRAME_DEADLINE_FACTOR
        self._transport.send(data, channel=self._channel, deadline_s=deadline)
        self._frames_sent += 1
        self._keyframes_sent += frame.keyframe
        self._bytes_sent += len(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverStats:
    """Counters and timing percentiles (ms, see :func:`stream.stats.percentiles`)."""

    messages_received: int
    messages_ignored: int
    """Messages on other channels than the receiver's."""
    bytes_received: int
    frames_received: int
    """Messages with a valid frame header."""
    frames_invalid: int
    """Messages whose frame header did not parse (dropped)."""
    frames_decoded: int
    """Pictures handed to the sink."""
    decode_errors: int
    frames_missing: int
    """Frames never seen, from gaps in the index sequence."""
    frames_late: int
    """Frames older than one already received (dropped: their successors are decoded)."""
    keyframes_received: int
    keyframe_requests: int
    frames_skipped: int
    """Frames not decoded while waiting for a keyframe after a loss (their references may
    be broken)."""
    transport_latency_ms: dict[str, float | None]
    decode_ms: dict[str, float | None]
    frame_latency_ms: dict[str, float | None]
    pixel_latency_ms: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """Capture to shown, from the capture time drawn in the pixels (test pattern only)."""
    stamp_error_ms: float | None = None
    """The largest difference between the pixels' capture time and the frame header's."""
    jitter: str | None = None
    """The jitter buffer's mode, or None when pictures go to the sink as they are decoded."""
    playout_delay_ms: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """mean, p50, p95 of sender hand-off to release (jitter buffer only)."""
    late_frames: int = 0
    """Released after their scheduled time, or dropped as late by the jitter buffer."""
    stalls: int = 0
    stall_ms: float = 0.0


class VideoReceiver:
    """Receives, decodes and hands frames to a sink, measuring latency on the way.

    When it sees a frame is missing (a gap in indices, or a decode error) it calls
    ``on_keyframe_needed``; while waiting for that keyframe it asks again at most every
    ``keyframe_retry_s``, since one request per following frame would only flood the sender.

    With a ``jitter`` buffer, every frame is still decoded as it arrives (the reference chain
    needs them all), and the pictures wait in the buffer for their playout time; the sink
    gets them from a timer on the running loop. Frame latency is then capture to release.
    """

    def __init__(
        self,
        transport: FrameTransport,
        decoder: H264Decoder,
        sink: Sink,
        *,
        channel: int | None = None,
        on_keyframe_needed: Callable[[], None] | None = None,
        keyframe_retry_s: float = 0.5,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        jitter: JitterBuffer[DecodedPicture] | None = None,
    ) -> None:
        if channel is not None and channel < 0:
            raise ValueError(f"channel must be >= 0 or None, got {channel}")
        if not keyframe_retry_s > 0:
            raise ValueError(f"keyframe_retry_s must be positive, got {keyframe_retry_s}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self._transport = transport
        self._decoder = decoder
        self._sink = sink
        self._channel = channel
        self._on_keyframe_needed = on_keyframe_needed
        self._keyframe_retry_s = keyframe_retry_s
        self._running = False
        self._expected_index: int | None = None
        self._awaiting_keyframe = False
        self._last_request_s = 0.0
        self._messages = 0
        self._ignored = 0
        self._bytes = 0
        self._frames = 0
        self._invalid = 0
        self._decoded = 0
        self._decode_errors = 0
        self._missing = 0
        self._late = 0
        self._keyframes = 0
        self._requests = 0
        self._skipped = 0
        self._transport_ms: deque[float] = deque(maxlen=max_samples)
        self._decode_ms: deque[float] = deque(maxlen=max_samples)
        self._frame_ms: deque[float] = deque(maxlen=max_samples)
        self._frame_log: deque[tuple[int, float]] = deque(maxlen=max_samples)
        self._jitter = jitter
        self._sent_s: dict[int, float] = {}  # frame index -> sender hand-off, for the buffer
        self._playout_ms: deque[float] = deque(maxlen=max_samples)
        self._pixel_ms: deque[float] = deque(maxlen=max_samples)
        self._stamp_error_ms = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def stats(self, *, recent: int | None = None) -> ReceiverStats:
        """A snapshot of the counters since this receiver was created.

        ``recent`` limits the percentiles to the last ``recent`` samples of each series (a
        live view: pass the frames received since the previous snapshot); counters are totals.
        """
        stats = ReceiverStats(
            messages_received=self._messages,
            messages_ignored=self._ignored,
            bytes_received=self._bytes,
            frames_received=self._frames,
            frames_invalid=self._invalid,
            frames_decoded=self._decoded,
            decode_errors=self._decode_errors,
            frames_missing=self._missing,
            frames_late=self._late,
            keyframes_received=self._keyframes,
            keyframe_requests=self._requests,
            frames_skipped=self._skipped,
            transport_latency_ms=percentiles(_tail(self._transport_ms, recent)),
            decode_ms=percentiles(_tail(self._decode_ms, recent)),
            frame_latency_ms=percentiles(_tail(self._frame_ms, recent)),
            pixel_latency_ms=percentiles(_tail(self._pixel_ms, recent)),
            stamp_error_ms=round(self._stamp_error_ms, 3) if self._pixel_ms else None,
        )
        jitter = self._jitter
        if jitter is None:
            return stats
        played = jitter.stats(time.monotonic())
        delays = list(_tail(self._playout_ms, recent))
        summary = percentiles(delays)
        return dataclasses.replace(
            stats,
            jitter=played.mode,
            playout_delay_ms={
                "mean": round(sum(delays) / len(delays), 3) if delays else None,
                "p50": summary["p50"],
                "p95": summary["p95"],
            },
            late_frames=played.late_frames,
            stalls=played.stalls,
            stall_ms=round(played.stall_s * 1000, 3),
        )

    def frame_log(self) -> list[tuple[int, float]]:
        """(frame index, capture-to-sink latency in ms) of the last decoded frames, in order
        (as many as ``max_samples``): the series behind the percentiles."""
        return list(self._frame_log)

    async def run(
        self, seconds: float | None = None, *, stop: asyncio.Event | None = None
    ) -> ReceiverStats:
        """Receive until ``seconds`` pass, ``stop`` is set, or the transport ends its stream.

        Errors raised by the transport's iterator propagate; bad frames never do.
        """
        if seconds is not None and seconds < 0:
            raise ValueError(f"seconds must be >= 0 or None, got {seconds}")
        if self._running:
            raise StreamUsageError("VideoReceiver.run() is already running")
        self._running = True
        try:
            consume = asyncio.ensure_future(self._consume())
            waiters: set[asyncio.Future[None]] = {consume}
            if stop is not None:
                waiters.add(asyncio.ensure_future(self._wait(stop)))
            try:
                await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if consume.done() and not consume.cancelled():
                consume.result()  # re-raise a transport failure
                await self._drain()  # the stream ended: play out what is still waiting
        finally:
            self._running = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return self.stats()

    async def _drain(self) -> None:
        jitter = self._jitter
        while jitter is not None and jitter.buffered:
            wake = jitter.next_wakeup(time.monotonic())
            if wake is None:
                return
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            self._play()

    @staticmethod
    async def _wait(stop: asyncio.Event) -> None:
        await stop.wait()

    async def _consume(self) -> None:
        async for message in self._transport:
            self.handle_message(message)

    def handle_message(self, message: MessageLike) -> None:
        """Process one delivered message; exposed for callers that drive the transport."""
        arrival_ns = time.monotonic_ns()
        if self._channel is not None and message.channel != self._channel:
            self._ignored += 1
            return
        data = message.data
        self._messages += 1
        self._bytes += len(data)
        try:
            frame = unpack_frame(data)
        except FrameDecodeError:
            self._invalid += 1
            return
        self._frames += 1
        if frame.send_ns:
            self._transport_ms.append(_ms(arrival_ns - frame.send_ns))
        if self._jitter is not None:
            sent_s = self._sent_s
            sent_s[frame.index] = (frame.send_ns or frame.capture_ns) / 1e9
            if len(sent_s) > 1024:  # bounded: pictures come out within a few frames
                del sent_s[next(iter(sent_s))]  # the oldest: dicts keep insertion order
        if not self._in_sequence(frame):
            return
        if self._awaiting_keyframe and not frame.keyframe:
            # A frame is missing (or failed to decode): until a keyframe comes, this frame's
            # references may be broken and its picture garbage. Not shown, not decoded.
            self._skipped += 1
            self._request_keyframe()  # again, at most every keyframe_retry_s
            return
        self._decode(frame)

    def _in_sequence(self, frame: EncodedFrame) -> bool:
        """Track the index sequence; False when the frame is stale and must be dropped."""
        expected = self._expected_index
        if expected is not None and frame.index < expected:
            self._late += 1
            return False
        if expected is not None and frame.index > expected:
            self._missing += frame.index - expected
        self._expected_index = frame.index + 1
        if frame.keyframe:
            self._keyframes += 1
            self._awaiting_keyframe = False
        elif expected is None or frame.index > expected:
            # Joined mid-stream, or lost a frame this one may reference.
            self._request_keyframe()
        return True

    def _decode(self, frame: EncodedFrame) -> None:
        start_ns = time.monotonic_ns()
        try:
            pictures = self._decoder.decode(frame)
        except FrameDecodeError:
            self._decode_errors += 1
            self._request_keyframe()
            return
        self._decode_ms.append(_ms(time.monotonic_ns() - start_ns))
        jitter = self._jitter
        for picture in pictures:
            self._decoded += 1
            if jitter is None:
                self._show(picture)
                continue
            sent_s = self._sent_s.pop(picture.index, picture.capture_ns / 1e9)
            jitter.push(picture.index, sent_s, time.monotonic(), picture)
        if jitter is not None:
            self._play()

    def _show(self, picture: DecodedPicture) -> None:
        now_ns = time.monotonic_ns()
        latency_ms = _ms(now_ns - picture.capture_ns)
        self._frame_ms.append(latency_ms)
        self._frame_log.append((picture.index, latency_ms))
        # The capture time drawn in the pixels (the synthetic source's time stamp): latency
        # read from the picture alone, and how far it is from the frame header's.
        pixel_ns = read_time(picture.luma, picture.capture_ns)
        if pixel_ns is not None:
            self._pixel_ms.append(_ms(now_ns - pixel_ns))
            self._stamp_error_ms = max(
                self._stamp_error_ms, abs(_ms(pixel_ns - picture.capture_ns))
            )
        self._sink.consume(picture)

    def _play(self) -> None:
        """Release what the jitter buffer has due, and set the timer for the next one."""
        jitter = self._jitter
        assert jitter is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = time.monotonic()
        for event in jitter.poll(now):
            if isinstance(event, FrameReleased):
                self._playout_ms.append(event.playout_delay_s * 1000)
                self._show(event.payload)
            # Drops and stalls are counted by the buffer; stats() reads them there.
        wake = jitter.next_wakeup(now)
        if wake is not None:
            loop = asyncio.get_running_loop()
            # loop.time() is time.monotonic() on the default and uvloop loops.
            self._timer = loop.call_at(loop.time() + max(0.0, wake - now), self._play)

    def _request_keyframe(self) -> None:
        now = time.monotonic()
        if self._awaiting_keyframe and now - self._last_request_s < self._keyframe_retry_s:
            return
        self._awaiting_keyframe = True
        self._last_request_s = now
        self._requests += 1
        if self._on_keyframe_needed is not None:
            self._on_keyframe_needed()
