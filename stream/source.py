"""Video sources: the :class:`VideoSource` protocol and a cheap synthetic test pattern.

A source turns a frame index into a yuv420p picture. It does not pace itself: the caller
(see :class:`stream.pipeline.VideoSender`) owns the clock and asks for frames on its ticks.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count as count_from
from typing import Protocol

import numpy as np
import numpy.typing as npt

from stream.frames import MAX_DIMENSION
from stream.stamp import (
    STAMP_HEIGHT_PX,
    STAMP_WIDTH_PX,
    has_time_stamp_room,
    read_stamp,
    stamp_index,
    stamp_time,
    time_stamp_left,
)

__all__ = ["SyntheticSource", "VideoSource", "read_stamp", "stamp_index"]

YuvFrame = npt.NDArray[np.uint8]
"""A yuv420p picture as one ``(height * 3 // 2, width)`` uint8 array: Y, then U, then V rows.

This is the layout ``av.VideoFrame.from_ndarray(array, format="yuv420p")`` takes.
"""


class VideoSource(Protocol):
    """What a sender needs from a source of pictures."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def interval_s(self) -> float:
        """Time between frames, 1 / fps."""
        ...

    def frame(self, index: int, capture_ns: int | None = None) -> YuvFrame:
        """Return picture number ``index`` as a fresh yuv420p array the caller may keep.
        ``capture_ns``: when it is taken (a source that can draws it into the pixels)."""
        ...


# The pattern is a periodic tile panned diagonally, so every frame has real motion that
# motion search can follow, and a box moving the other way, so it is not one global vector.
_TILE_PX = 256
_PAN_X_PX = 4  # per frame; even so the half-resolution chroma pans by whole pixels
_PAN_Y_PX = 2
_BOX_PX = 96
_BOX_STEP_PX = 6
_NOISE_SEED = 0x46570001  # fixed: the pattern must be identical run to run
_STAMP_CHROMA_ROWS = STAMP_HEIGHT_PX // 2
_STAMP_CHROMA_COLS = STAMP_WIDTH_PX // 2


def _luma_tile() -> npt.NDArray[np.uint8]:
    x = np.arange(_TILE_PX, dtype=np.float32)[np.newaxis, :]
    y = np.arange(_TILE_PX, dtype=np.float32)[:, np.newaxis]
    phase = 2 * np.pi / _TILE_PX
    wave = 45 * np.sin(phase * x) * np.cos(phase * 2 * y)
    bars = 25 * ((x // 32) % 2)
    # Fine texture gives the encoder detail to spend bits on, like a real camera picture.
    noise = np.random.default_rng(_NOISE_SEED).uniform(-10, 10, size=(_TILE_PX, _TILE_PX))
    tile: npt.NDArray[np.uint8] = np.clip(110 + wave + bars + noise, 16, 235).astype(np.uint8)
    return tile


def _chroma_tiles() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    half = _TILE_PX // 2
    x = np.arange(half, dtype=np.float32)
    phase = 2 * np.pi / half
    # Hue sweeps along x in U and along y in V; broadcast each ramp to the full tile.
    u = np.broadcast_to(128 + 40 * np.sin(phase * x), (half, half))
    v = np.broadcast_to((128 + 40 * np.cos(phase * x))[:, np.newaxis], (half, half))
    return u.astype(np.uint8), v.astype(np.uint8)


def _tiled(tile: npt.NDArray[np.uint8], rows: int, cols: int) -> npt.NDArray[np.uint8]:
    reps = (-(-rows // tile.shape[0]), -(-cols // tile.shape[1]))
    tiled: npt.NDArray[np.uint8] = np.ascontiguousarray(np.tile(tile, reps)[:rows, :cols])
    return tiled


def _bounce(position: int, span: int) -> int:
    """Triangle wave over ``0..span``: a position that bounces between the two edges."""
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position <= span else 2 * span - position


class SyntheticSource:
    """A moving yuv420p test pattern with the frame index stamped into the luma plane.

    The picture for an index is a pure function of the index, so tests can regenerate it.
    The base pattern is built once; each frame is slices and copies of it (about 0.1 ms at
    1280x720), plus the stamp (see :mod:`stream.stamp`).
    """

    def __init__(self, width: int, height: int, fps: float) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even dimensions, got {width}x{height}")
        if not (STAMP_WIDTH_PX <= width <= MAX_DIMENSION):
            raise ValueError(f"width must be in {STAMP_WIDTH_PX}..{MAX_DIMENSION}, got {width}")
        if not (STAMP_HEIGHT_PX <= height <= MAX_DIMENSION):
            raise ValueError(f"height must be in {STAMP_HEIGHT_PX}..{MAX_DIMENSION}, got {height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._width = width
        self._height = height
        self._fps = fps
        # One tile period of margin lets a window of the frame size slide anywhere in it.
        self._luma = _tiled(_luma_tile(), height + _TILE_PX, width + _TILE_PX)
        u_tile, v_tile = _chroma_tiles()
        half = _TILE_PX // 2
        self._u = _tiled(u_tile, height // 2 + half, width // 2 + half)
        self._v = _tiled(v_tile, height // 2 + half, width // 2 + half)
        self._box_span_x = width - _BOX_PX
        self._box_span_y = height - STAMP_HEIGHT_PX - _BOX_PX

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
        """Time between frames, 1 / fps."""
        return 1.0 / self._fps

    def frame(self, index: int, capture_ns: int | None = None) -> YuvFrame:
        """Return picture number ``index`` (a fresh array) with ``index`` stamped in it, and
        ``capture_ns`` too when given and the picture is wide enough (see
        :func:`stream.stamp.stamp_time`)."""
        w, h = self._width, self._height
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        ox = (index * _PAN_X_PX) % _TILE_PX
        oy = (index * _PAN_Y_PX) % _TILE_PX
        y_plane = out[:h]
        y_plane[:] = self._luma[oy : oy + h, ox : ox + w]
        # yuv420p stores the two quarter-size chroma planes back to back after Y, so they are
        # addressed through the flat buffer; the reshapes below are views, not copies.
        cw, ch = w // 2, h // 2
        cx, cy = ox // 2, oy // 2
        flat = out.reshape(-1)
        u_start = w * h
        v_start = u_start + cw * ch
        u_plane = flat[u_start:v_start].reshape(ch, cw)
        v_plane = flat[v_start:].reshape(ch, cw)
        u_plane[:] = self._u[cy : cy + ch, cx : cx + cw]
        v_plane[:] = self._v[cy : cy + ch, cx : cx + cw]
        # Grey chroma behind the stamp, so it reads as black and white blocks when viewed.
        for chroma in (u_plane, v_plane):
            chroma[:_STAMP_CHROMA_ROWS, :_STAMP_CHROMA_COLS] = 128
        if self._box_span_x >= 0 and self._box_span_y >= 0:
            bx = _bounce(-index * _BOX_STEP_PX, self._box_span_x)
            by = STAMP_HEIGHT_PX + _bounce(index * _BOX_STEP_PX, self._box_span_y)
            y_plane[by : by + _BOX_PX, bx : bx + _BOX_PX] = 220
        stamp_index(y_plane, index)
        if capture_ns is not None and has_time_stamp_room(w):
            left = time_stamp_left(w)
            for chroma in (u_plane, v_plane):
                chroma[:_STAMP_CHROMA_ROWS, left // 2 : left // 2 + _STAMP_CHROMA_COLS] = 128
            stamp_time(y_plane, capture_ns)
        return out

    def frames(self, count: int | None = None, *, start: int = 0) -> Iterator[YuvFrame]:
        """Yield pictures ``start``, ``start + 1``, ... (``count`` of them, or forever).

        Not paced: the caller decides when to pull the next one.
        """
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        indices = count_from(start) if count is None else range(start, start + count)
        for index in indices:
            yield self.frame(index)
