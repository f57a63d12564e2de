"""Media files as a source and a sink, through PyAV (FFmpeg).

:class:`FileSource` decodes a file's first video stream into yuv420p pictures, one per
``frame(index)`` call, in order; the sender's clock paces it (real time), a sender that skips
ticks skips pictures, and at the end it starts again (``loop``) or raises
:class:`~stream.errors.SourceEnded`. :class:`FileSink` writes the pictures it gets to a file
(MP4, MKV, ... by extension) with libx264, each at its frame index's time, so a frame lost on
the way leaves its slot empty instead of shifting the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from stream.codec import DecodedPicture
from stream.errors import SourceEnded, StreamError, StreamUsageError
from stream.frames import MAX_DIMENSION
from stream.source import YuvFrame

__all__ = ["FileSink", "FileSource"]


class FileSource:
    """A video file's pictures as yuv420p, at the file's size (even) or ``size``."""

    def __init__(
        self, path: str | Path, *, loop: bool = False, size: tuple[int, int] | None = None
    ) -> None:
        self._path = Path(path)
        self._loop = loop
        container = self._open()
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        self._fps = float(rate)
        if not 0 < self._fps <= 1000:
            raise StreamUsageError(f"{self._path}: unusable frame rate {self._fps}")
        width, height = size or (stream.codec_context.width, stream.codec_context.height)
        width, height = width - width % 2, height - height % 2  # yuv420p
        if not (16 <= width <= MAX_DIMENSION and 16 <= height <= MAX_DIMENSION):
            raise StreamUsageError(f"{self._path}: frame size {width}x{height} out of range")
        self._width, self._height = width, height
        self._container = container
        self._pictures = self._decode(container)
        self._next = 0
        self.loops = 0
        """How many times the file started again."""

    def _open(self) -> Any:
        try:
            container = av.open(str(self._path))
        except (av.error.FFmpegError, OSError) as exc:
            raise StreamUsageError(f"cannot open {self._path}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise StreamUsageError(f"{self._path} has no video stream")
        return container

    @staticmethod
    def _decode(container: Any) -> Iterator[av.VideoFrame]:
        try:
            yield from container.decode(video=0)
        except av.error.FFmpegError as exc:
            raise StreamError(f"decoding failed: {exc}") from exc

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def interval_s(self) -> float:
        return 1.0 / self._fps

    def frame(self, index: int, capture_ns: int | None = None) -> YuvFrame:
        """Picture ``index``: the pictures before it that were not asked for are skipped
        (decoded and dropped). Indices must not go back. A film is not drawn on:
        ``capture_ns`` is not used."""
        if index < self._next:
            raise StreamUsageError(f"a file plays forward: asked for {index} after {self._next}")
        while True:
            picture = self._advance()
            self._next += 1
            if self._next > index:
                break
        converted = picture.reformat(width=self._width, height=self._height, format="yuv420p")
        return np.asarray(converted.to_ndarray(), dtype=np.uint8)

    def _advance(self) -> av.VideoFrame:
        for _ in range(2):
            picture = next(self._pictures, None)
            if picture is not None:
                return picture
            if not self._loop:
                raise SourceEnded(f"{self._path}: end of file")
            self._container.close()
            self._container = self._open()
            self._pictures = self._decode(self._container)
            self.loops += 1
        raise SourceEnded(f"{self._path}: no pictures")

    def close(self) -> None:
        self._container.close()


class FileSink:
    """Writes pictures to ``path`` with libx264 at ``fps`` (the container from the
    extension). Opened on the first picture (its size is the file's); call :meth:`close` to
    flush the encoder and finish the file."""

    def __init__(self, path: str | Path, fps: float, *, crf: int = 18) -> None:
        if not 0 < fps <= 1000:
            raise StreamUsageError(f"fps must be in (0, 1000], got {fps}")
        self._path = Path(path)
        self._rate = Fraction(fps).limit_denominator(1001)
        self._crf = crf
        self._container: Any = None
        self._stream: Any = None
        self._first_index: int | None = None
        self._last_pts = -1
        self.frames = 0

    def consume(self, picture: DecodedPicture) -> None:
        if self._container is None:
            self._start(picture)
        assert self._first_index is not None
        pts = picture.index - self._first_index
        if pts <= self._last_pts:
            return  # the file's clock only goes forward
        frame = picture.picture
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = pts
        self._last_pts = pts
        self._mux(frame)
        self.frames += 1

    def _start(self, picture: DecodedPicture) -> None:
        try:
            container = av.open(str(self._path), "w")
        except (av.error.FFmpegError, OSError) as exc:
            raise StreamUsageError(f"cannot write {self._path}: {exc}") from None
        stream = container.add_stream("libx264", rate=self._rate)
        stream.width, stream.height = picture.width, picture.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self._rate
        stream.options = {"preset": "ultrafast", "crf": str(self._crf)}
        self._container, self._stream = container, stream
        self._first_index = picture.index

    def _mux(self, frame: av.VideoFrame | None) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.error.FFmpegError as exc:
            raise StreamError(f"writing {self._path} failed: {exc}") from exc

    def close(self) -> None:
        if self._container is None:
            return
        self._mux(None)
        self._container.close()
        self._container = None
