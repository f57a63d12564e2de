"""Media files: FileSource in, FileSink out (PyAV), through the video pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from stream import (
    EncoderConfig,
    FileSink,
    FileSource,
    H264Decoder,
    H264Encoder,
    SourceEnded,
    StreamUsageError,
    SyntheticSource,
    VideoReceiver,
    VideoSender,
    read_stamp,
)
from stream.jitter import JitterBuffer
from tests.test_stream_pipeline import transport_pair

FRAMES = 45


def write_test_file(path: Path, frames: int = FRAMES, size: tuple[int, int] = (320, 240)) -> None:
    """The synthetic pattern (frame numbers stamped into the pixels) as an H.264 file."""
    source = SyntheticSource(size[0], size[1], 30)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"crf": "12", "preset": "ultrafast"}
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(source.frame(i), format="yuv420p")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()


def stamps(path: Path) -> list[int | None]:
    with av.open(str(path)) as container:
        return [
            read_stamp(np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8))
            for frame in container.decode(video=0)
        ]


def test_file_source_reads_every_picture_in_order_then_ends_or_loops(tmp_path: Path) -> None:
    path = tmp_path / "in.mkv"
    write_test_file(path)
    source = FileSource(path)
    assert (source.width, source.height, source.fps) == (320, 240, 30.0)
    got = [read_stamp(source.frame(i)[:240]) for i in range(FRAMES)]
    assert got == list(range(FRAMES))
    with pytest.raises(SourceEnded):
        source.frame(FRAMES)
    looping = FileSource(path, loop=True)
    assert read_stamp(looping.frame(FRAMES + 2)[:240]) == 2 and looping.loops == 1
    with pytest.raises(StreamUsageError, match="plays forward"):
        looping.frame(0)


def test_missing_and_non_video_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamUsageError, match="cannot open"):
        FileSource(tmp_path / "nope.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(StreamUsageError):
        FileSource(text)


def test_a_file_plays_through_to_a_file_sink_whole_and_in_order(tmp_path: Path) -> None:
    source_path, out_path = tmp_path / "in.mkv", tmp_path / "out.mp4"
    write_test_file(source_path)
    asyncio.run(_play_through(source_path, out_path))
    assert stamps(out_path) == list(range(FRAMES))


async def _play_through(source_path: Path, out_path: Path) -> None:
    send_end, receive_end = transport_pair()
    source = FileSource(source_path)
    encoder = H264Encoder(EncoderConfig(width=320, height=240, fps=30, bitrate_bps=2_000_000))
    sender = VideoSender(send_end, source, encoder, channel=3, frame_deadline_s=None)
    sink = FileSink(out_path, source.fps)
    receiver = VideoReceiver(
        receive_end, H264Decoder(), sink, channel=3, jitter=JitterBuffer("fixed:50")
    )

    async def send() -> None:
        try:
            await sender.run(60.0)  # ends with the file, well before a minute
        finally:
            send_end.close()

    await asyncio.gather(send(), receiver.run(seconds=30))
    sink.close()
    assert sink.frames == FRAMES
