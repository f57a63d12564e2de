"""Synthetic source and the pixel stamp, before any codec is involved."""

from __future__ import annotations

import numpy as np
import pytest

from stream import SyntheticSource, read_stamp, stamp_index
from stream.stamp import STAMP_HEIGHT_PX, STAMP_WIDTH_PX


@pytest.mark.parametrize("index", [0, 1, 0x5A5A5A5A, 2**31, 2**32 - 1])
def test_stamp_round_trip(index: int) -> None:
    plane = np.full((64, 256), 128, dtype=np.uint8)
    stamp_index(plane, index)
    assert read_stamp(plane) == index


def test_stamp_keeps_the_low_32_bits() -> None:
    plane = np.zeros((64, 256), dtype=np.uint8)
    stamp_index(plane, 2**32 + 5)
    assert read_stamp(plane) == 5


def test_stamp_reads_through_a_strided_view() -> None:
    padded = np.zeros((64, 320), dtype=np.uint8)
    view = padded[:, :300]
    stamp_index(view, 1234)
    assert read_stamp(view) == 1234


@pytest.mark.parametrize("fill", [0, 16, 128, 235, 255])
def test_flat_picture_has_no_stamp(fill: int) -> None:
    assert read_stamp(np.full((64, 256), fill, dtype=np.uint8)) is None


def test_damaged_stamp_reads_none_not_a_wrong_index() -> None:
    plane = np.zeros((64, 256), dtype=np.uint8)
    stamp_index(plane, 0xDEADBEEF)
    # Invert one index block (row 1, column 3): the check byte no longer matches.
    block = plane[16:32, 48:64]
    block[:] = 251 - block
    assert read_stamp(plane) is None


def test_stamp_needs_room() -> None:
    with pytest.raises(ValueError):
        read_stamp(np.zeros((STAMP_HEIGHT_PX - 1, STAMP_WIDTH_PX), dtype=np.uint8))
    with pytest.raises(ValueError):
        stamp_index(np.zeros((STAMP_HEIGHT_PX, STAMP_WIDTH_PX - 1), dtype=np.uint8), 1)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 360), (256, 48), (1920, 1080)])
def test_source_frames_are_yuv420p_and_stamped(width: int, height: int) -> None:
    source = SyntheticSource(width, height, 30)
    frame = source.frame(42)
    assert frame.shape == (height * 3 // 2, width)
    assert frame.dtype == np.uint8
    assert read_stamp(frame[:height]) == 42


def test_source_is_deterministic_and_moving() -> None:
    source = SyntheticSource(640, 360, 30)
    first, again, second = source.frame(10), source.frame(10), source.frame(11)
    assert np.array_equal(first, again)
    # Outside the stamp, most of the picture changes from one frame to the next.
    moved = first[STAMP_HEIGHT_PX:360] != second[STAMP_HEIGHT_PX:360]
    assert moved.mean() > 0.5
    # The chroma planes move too.
    assert not np.array_equal(first[360:], second[360:])


def test_frames_iterator_counts_and_starts() -> None:
    source = SyntheticSource(320, 240, 30)
    stamps = [read_stamp(frame[:240]) for frame in source.frames(3, start=5)]
    assert stamps == [5, 6, 7]
    endless = source.frames()
    assert [read_stamp(next(endless)[:240]) for _ in range(2)] == [0, 1]


def test_frame_interval() -> None:
    assert SyntheticSource(320, 240, 25).interval_s == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("width", "height", "fps"),
    [(641, 360, 30), (640, 361, 30), (254, 360, 30), (640, 46, 30), (8194, 360, 30), (640, 360, 0)],
)
def test_source_rejects_bad_settings(width: int, height: int, fps: float) -> None:
    with pytest.raises(ValueError):
        SyntheticSource(width, height, fps)
