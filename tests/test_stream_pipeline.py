"""Sender and receiver wired through an in-memory transport (no sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import numpy as np
import pytest

from stream import (
    DecodedPicture,
    DiscardSink,
    EncoderConfig,
    H264Decoder,
    H264Encoder,
    SenderStats,
    StreamUsageError,
    SyntheticSource,
    VideoReceiver,
    VideoSender,
    pack_frame,
    read_stamp,
)
from stream.jitter import JitterBuffer
from stream.source import VideoSource, YuvFrame


@dataclass(frozen=True, slots=True)
class Message:
    data: bytes
    channel: int


class QueueTransport:
    """One end of an in-memory pipe; ``None`` in the queue ends the peer's iteration."""

    def __init__(self, inbox: asyncio.Queue[Message | None], outbox: asyncio.Queue[Message | None]):
        self._inbox = inbox
        self._outbox = outbox
        self.sent: list[tuple[int, float | None]] = []
        self.drop: set[int] = set()  # sequence numbers of sends to lose

    def send(self, data: bytes, *, channel: int = 0, deadline_s: float | None = None) -> None:
        self.sent.append((channel, deadline_s))
        if len(self.sent) - 1 not in self.drop:
            self._outbox.put_nowait(Message(data, channel))

    def close(self) -> None:
        self._outbox.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while (message := await self._inbox.get()) is not None:
            yield message


def transport_pair() -> tuple[QueueTransport, QueueTransport]:
    a_to_b: asyncio.Queue[Message | None] = asyncio.Queue()
    b_to_a: asyncio.Queue[Message | None] = asyncio.Queue()
    return QueueTransport(b_to_a, a_to_b), QueueTransport(a_to_b, b_to_a)


class RecordingSink:
    def __init__(self) -> None:
        self.pictures: list[tuple[int, int | None]] = []

    def consume(self, picture: DecodedPicture) -> None:
        self.pictures.append((picture.index, read_stamp(picture.luma)))


def make_sender(transport: QueueTransport, source: VideoSource, **kwargs: object) -> VideoSender:
    fps = 1 / source.interval_s
    encoder = H264Encoder(EncoderConfig(width=source.width, height=source.height, fps=fps))
    options: dict[str, object] = {"channel": 3, "frame_deadline_s": 0.1}
    options.update(kwargs)
    return VideoSender(transport, source, encoder, **options)  # type: ignore[arg-type]


def test_one_second_of_video_end_to_end() -> None:
    asyncio.run(_test_one_second_of_video_end_to_end())


async def _test_one_second_of_video_end_to_end() -> None:
    send_end, receive_end = transport_pair()
    source = SyntheticSource(640, 360, 30)
    sender = make_sender(send_end, source)
    sink = RecordingSink()
    receiver = VideoReceiver(receive_end, H264Decoder(), sink, channel=3)
    snapshots: list[SenderStats] = []

    async def send() -> SenderStats:
        try:
            return await sender.run(1.0, snapshots.append, stats_interval_s=0.25)
        finally:
            send_end.close()

    started = time.monotonic()
    sent, received = await asyncio.gather(send(), receiver.run(seconds=5))
    elapsed = time.monotonic() - started

    assert 0.95 < elapsed < 1.5
    assert 28 <= sent.frames_sent <= 30
    assert sent.ticks_skipped == 0
    assert sent.keyframes_sent == 1
    assert sent.bytes_sent == received.bytes_received
    assert sent.encode_ms["p50"] is not None and sent.encode_ms["p50"] > 0
    assert 3 <= len(snapshots) <= 4
    # Keyframes get four times the deadline: they end a receiver's wait after a loss.
    assert [deadline for _, deadline in send_end.sent] == [0.4] + [0.1] * (sent.frames_sent - 1)
    assert all(channel == 3 for channel, _ in send_end.sent)

    indices = [index for index, _ in sink.pictures]
    assert indices == list(range(sent.frames_sent))
    assert [stamp for _, stamp in sink.pictures] == indices
    assert received.frames_received == received.frames_decoded == sent.frames_sent
    assert received.frames_invalid == received.decode_errors == received.frames_missing == 0
    assert received.keyframe_requests == 0
    for latency in (received.transport_latency_ms, received.decode_ms, received.frame_latency_ms):
        assert latency["p50"] is not None and latency["p50"] > 0
        assert latency["max"] is not None and latency["max"] < 1000
    assert received.frame_latency_ms["p50"] > received.decode_ms["p50"]  # type: ignore[operator]


def test_lost_frame_asks_for_a_keyframe_once_and_recovers() -> None:
    asyncio.run(_test_lost_frame_asks_for_a_keyframe_once_and_recovers())


async def _test_lost_frame_asks_for_a_keyframe_once_and_recovers() -> None:
    send_end, receive_end = transport_pair()
    source = SyntheticSource(320, 240, 30)
    sender = make_sender(send_end, source)
    send_end.drop = {3, 4}
    requests: list[float] = []

    def on_keyframe_needed() -> None:
        requests.append(time.monotonic())
        sender.request_keyframe()

    sink = DiscardSink()
    receiver = VideoReceiver(
        receive_end, H264Decoder(), sink, on_keyframe_needed=on_keyframe_needed
    )
    receive_task = asyncio.ensure_future(receiver.run())
    await sender.run(0.3)
    send_end.close()
    stats = await receive_task

    assert stats.frames_missing == 2
    assert stats.keyframe_requests == len(requests) == 1
    assert stats.keyframes_received == 2  # the first frame and the requested one
    # Frame 5 references the lost frame 4: it is not decoded (its picture would be garbage)
    # and the picture resumes with the keyframe after it.
    assert stats.frames_skipped == 1
    assert sink.frames == stats.frames_decoded == stats.frames_received - 1


def test_receiver_counts_bad_and_foreign_messages_and_stops_on_event() -> None:
    asyncio.run(_test_receiver_counts_bad_and_foreign_messages_and_stops_on_event())


async def _test_receiver_counts_bad_and_foreign_messages_and_stops_on_event() -> None:
    send_end, receive_end = transport_pair()
    source = SyntheticSource(320, 240, 30)
    encoder = H264Encoder(EncoderConfig(width=320, height=240, fps=30))
    frames = [encoder.encode(source.frame(i), time.monotonic_ns())[0] for i in range(3)]
    requests = 0

    def on_keyframe_needed() -> None:
        nonlocal requests
        requests += 1

    stop = asyncio.Event()
    sink = RecordingSink()
    receiver = VideoReceiver(
        receive_end, H264Decoder(), sink, channel=0, on_keyframe_needed=on_keyframe_needed
    )
    task = asyncio.ensure_future(receiver.run(stop=stop))
    send_end.send(b"not a frame")
    send_end.send(pack_frame(frames[0]), channel=1)  # another channel: ignored
    send_end.send(pack_frame(frames[1]))  # joined mid-stream: not a keyframe
    send_end.send(pack_frame(frames[0]))  # older than what we have: dropped as late
    send_end.send(pack_frame(frames[2]))
    await asyncio.sleep(0.05)
    stop.set()
    stats = await asyncio.wait_for(task, 1)

    assert stats.messages_ignored == 1
    assert stats.messages_received == 4
    assert stats.frames_invalid == 1
    assert stats.frames_late == 1
    assert stats.frames_received == 3
    assert stats.keyframe_requests == requests == 1  # rate limited while waiting
    assert stats.transport_latency_ms["p50"] is None  # send_ns was never set
    assert stats.frames_decoded == len(sink.pictures)


def test_receiver_run_times_out_without_messages() -> None:
    asyncio.run(_test_receiver_run_times_out_without_messages())


async def _test_receiver_run_times_out_without_messages() -> None:
    _, receive_end = transport_pair()
    receiver = VideoReceiver(receive_end, H264Decoder(), DiscardSink())
    started = time.monotonic()
    stats = await receiver.run(seconds=0.1)
    assert 0.09 < time.monotonic() - started < 0.5
    assert stats.messages_received == 0
    assert stats.frame_latency_ms == {"p50": None, "p95": None, "p99": None, "max": None}


class StallingSource:
    """A source whose picture 3 takes 150 ms, like a loop blocked by something else."""

    def __init__(self, inner: SyntheticSource) -> None:
        self._inner = inner
        self.width, self.height, self.interval_s = inner.width, inner.height, inner.interval_s

    def frame(self, index: int, capture_ns: int | None = None) -> YuvFrame:
        if index == 3:
            time.sleep(0.15)
        return self._inner.frame(index)


def test_sender_skips_ticks_instead_of_bursting() -> None:
    asyncio.run(_test_sender_skips_ticks_instead_of_bursting())


async def _test_sender_skips_ticks_instead_of_bursting() -> None:
    send_end, _ = transport_pair()
    sender = make_sender(send_end, StallingSource(SyntheticSource(320, 240, 30)))
    started = time.monotonic()
    stats = await sender.run(0.5)
    assert time.monotonic() - started < 0.6
    assert stats.ticks_skipped >= 3
    assert stats.frames_sent + stats.ticks_skipped in (15, 16)
    assert stats.tick_late_ms["max"] is not None and stats.tick_late_ms["max"] < 34


def test_run_twice_at_once_is_a_usage_error() -> None:
    asyncio.run(_test_run_twice_at_once_is_a_usage_error())


async def _test_run_twice_at_once_is_a_usage_error() -> None:
    send_end, receive_end = transport_pair()
    sender = make_sender(send_end, SyntheticSource(320, 240, 30))
    first = asyncio.ensure_future(sender.run(0.1))
    await asyncio.sleep(0)
    with pytest.raises(StreamUsageError):
        await sender.run(0.1)
    await first
    receiver = VideoReceiver(receive_end, H264Decoder(), DiscardSink())
    first_rx = asyncio.ensure_future(receiver.run(0.1))
    await asyncio.sleep(0)
    with pytest.raises(StreamUsageError):
        await receiver.run(0.1)
    await first_rx


def test_sender_checks_its_parts() -> None:
    send_end, _ = (None, None)
    source = SyntheticSource(320, 240, 30)
    encoder = H264Encoder(EncoderConfig(width=640, height=360, fps=30))
    with pytest.raises(ValueError, match="encoder expects"):
        VideoSender(send_end, source, encoder, channel=0, frame_deadline_s=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_sender(send_end, source, frame_deadline_s=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_sender(send_end, source, channel=-1)  # type: ignore[arg-type]


def test_discard_sink_counts() -> None:
    sink = DiscardSink()
    picture = DecodedPicture(
        index=0,
        capture_ns=0,
        keyframe=True,
        width=2,
        height=2,
        encoded_bytes=10,
        luma=np.zeros((2, 2), dtype=np.uint8),
        picture=av.VideoFrame(2, 2, "yuv420p"),
    )
    sink.consume(picture)
    sink.consume(picture)
    assert (sink.frames, sink.encoded_bytes) == (2, 20)


def test_stats_recent_limits_percentiles_to_the_newest_samples() -> None:
    asyncio.run(_test_stats_recent_limits_percentiles_to_the_newest_samples())


async def _test_stats_recent_limits_percentiles_to_the_newest_samples() -> None:
    send_end, receive_end = transport_pair()
    sender = make_sender(send_end, SyntheticSource(320, 240, 30))
    receiver = VideoReceiver(receive_end, H264Decoder(), DiscardSink(), channel=3)

    async def send() -> None:
        try:
            await sender.run(0.3)
        finally:
            send_end.close()

    await asyncio.gather(send(), receiver.run(seconds=5))
    for stats in (sender.stats, receiver.stats):
        assert stats(recent=10**6) == stats()  # more than there are: all of them
    assert sender.stats(recent=0).encode_ms["p50"] is None
    assert sender.stats(recent=0).frames_sent == sender.stats().frames_sent >= 5
    newest = sender.stats(recent=1).encode_ms
    assert newest["p50"] == newest["max"]  # one sample
    window = receiver.stats(recent=2).frame_latency_ms
    assert window["p50"] is not None and window["max"] is not None
    assert window["max"] <= receiver.stats().frame_latency_ms["max"]  # type: ignore[operator]


def test_a_fixed_jitter_buffer_holds_each_picture_to_its_playout_time() -> None:
    asyncio.run(_test_a_fixed_jitter_buffer_holds_each_picture_to_its_playout_time())


async def _test_a_fixed_jitter_buffer_holds_each_picture_to_its_playout_time() -> None:
    send_end, receive_end = transport_pair()
    source = SyntheticSource(320, 180, 30)
    sender = make_sender(send_end, source)
    sink = RecordingSink()
    jitter: JitterBuffer[DecodedPicture] = JitterBuffer("fixed:80")
    receiver = VideoReceiver(receive_end, H264Decoder(), sink, channel=3, jitter=jitter)

    async def send() -> SenderStats:
        try:
            return await sender.run(1.0)
        finally:
            send_end.close()

    sent, _ = await asyncio.gather(send(), receiver.run(seconds=5))
    received = receiver.stats()
    # All of them: when the stream ends, run() plays out what is still waiting.
    assert [index for index, _ in sink.pictures] == list(range(sent.frames_sent))
    assert received.jitter == "fixed:80" and received.late_frames == 0
    delay = received.playout_delay_ms
    # 80 ms after the fastest frame's hand-off (the queue transport is near instant), give or
    # take the event loop's timer resolution.
    assert delay["p50"] is not None and 79 <= delay["p50"] <= 84
    assert received.frame_latency_ms["p50"] is not None and received.frame_latency_ms["p50"] >= 80


def test_sender_aims_the_encoder_at_its_share_of_the_transport_target() -> None:
    asyncio.run(_test_sender_aims_the_encoder_at_its_share_of_the_transport_target())


async def _test_sender_aims_the_encoder_at_its_share_of_the_transport_target() -> None:
    send_end, _ = transport_pair()
    source = SyntheticSource(320, 180, 30)
    target = {"bps": 600_000.0}
    encoder = H264Encoder(EncoderConfig(width=320, height=180, fps=30))
    sender = VideoSender(
        send_end, source, encoder, channel=3, frame_deadline_s=0.1, bitrate=lambda: target["bps"]
    )
    await sender.run(0.2)
    stats = sender.stats()
    # 85 % of the target; the VBV was reopened at twice that (4 Mbit/s was far above it)
    assert stats.encoder_bitrate_bps == 510_000
    assert encoder.config.bitrate_bps == 1_020_000
    target["bps"] = 700_000.0  # +17 %: retargeted in place, no reopen within 4 s
    await sender.run(0.1)
    assert sender.stats().encoder_bitrate_bps == 595_000
    assert encoder.config.bitrate_bps == 1_020_000


def test_pictures_are_made_and_encoded_off_the_event_loop() -> None:
    asyncio.run(_test_pictures_are_made_and_encoded_off_the_event_loop())


async def _test_pictures_are_made_and_encoded_off_the_event_loop() -> None:
    import threading

    loop_thread = threading.current_thread()
    threads: set[threading.Thread] = set()

    class Watched(SyntheticSource):
        def frame(self, index: int, capture_ns: int | None = None) -> YuvFrame:
            threads.add(threading.current_thread())
            return super().frame(index, capture_ns)

    send_end, _ = transport_pair()
    sender = make_sender(send_end, Watched(320, 180, 30))
    stats = await sender.run(0.2)
    assert stats.frames_sent >= 5
    assert threads and loop_thread not in threads
    inline = make_sender(send_end, Watched(320, 180, 30), encode_in_thread=False)
    threads.clear()
    await inline.run(0.1)
    assert threads == {loop_thread}
