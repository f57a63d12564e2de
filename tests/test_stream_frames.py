"""Frame header: round trip, every malformed shape, and a fuzz property."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import (
    HEADER_SIZE,
    EncodedFrame,
    FrameDecodeError,
    StreamUsageError,
    pack_frame,
    unpack_frame,
)

U64 = 2**64 - 1


def make_frame(**overrides: object) -> EncodedFrame:
    fields: dict[str, object] = {
        "index": 7,
        "capture_ns": 123_456_789,
        "send_ns": 123_999_999,
        "keyframe": True,
        "width": 1280,
        "height": 720,
        "data": b"\x00\x00\x00\x01\x65payload",
    }
    fields.update(overrides)
    return EncodedFrame(**fields)  # type: ignore[arg-type]


def test_header_is_32_bytes() -> None:
    assert HEADER_SIZE == 32
    assert len(pack_frame(make_frame())) == HEADER_SIZE + len(make_frame().data)


@pytest.mark.parametrize("keyframe", [True, False])
def test_round_trip(keyframe: bool) -> None:
    frame = make_frame(keyframe=keyframe, index=U64, capture_ns=U64, send_ns=0)
    assert unpack_frame(pack_frame(frame)) == frame


def test_unpack_accepts_memoryview_and_copies_payload() -> None:
    buffer = bytearray(pack_frame(make_frame()))
    frame = unpack_frame(memoryview(buffer))
    buffer[-1] ^= 0xFF
    assert frame == make_frame()
    assert type(frame.data) is bytes


def test_send_ns_defaults_to_zero() -> None:
    frame = EncodedFrame(index=0, capture_ns=1, keyframe=False, width=2, height=2, data=b"x")
    assert frame.send_ns == 0


def _corrupt(offset: int, value: bytes) -> bytes:
    data = bytearray(pack_frame(make_frame()))
    data[offset : offset + len(value)] = value
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (pack_frame(make_frame())[:HEADER_SIZE], "too short"),  # header without payload
        (pack_frame(make_frame())[:10], "too short"),
        (_corrupt(0, b"XX"), "magic"),
        (_corrupt(2, b"\x02"), "version"),
        (_corrupt(2, b"\x00"), "version"),
        (_corrupt(3, b"\x02"), "reserved"),
        (_corrupt(3, b"\x81"), "reserved"),
        (_corrupt(28, struct.pack("!H", 0)), "out of range"),
        (_corrupt(28, struct.pack("!H", 8193)), "out of range"),
        (_corrupt(30, struct.pack("!H", 0xFFFF)), "out of range"),
    ],
)
def test_malformed_input_raises_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(FrameDecodeError, match=reason):
        unpack_frame(data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"index": -1},
        {"index": U64 + 1},
        {"capture_ns": -5},
        {"send_ns": U64 + 1},
        {"width": 0},
        {"height": 8193},
        {"data": b""},
    ],
)
def test_pack_rejects_fields_the_wire_cannot_carry(overrides: dict[str, object]) -> None:
    with pytest.raises(StreamUsageError):
        pack_frame(make_frame(**overrides))


@given(st.binary(max_size=128))
def test_any_bytes_unpack_or_raise_decode_error(data: bytes) -> None:
    try:
        frame = unpack_frame(data)
    except FrameDecodeError:
        return
    assert frame.data == data[HEADER_SIZE:]


@given(
    header=st.binary(min_size=HEADER_SIZE - 3, max_size=HEADER_SIZE - 3),
    payload=st.binary(max_size=16),
)
def test_headers_with_valid_magic_unpack_or_raise_decode_error(
    header: bytes, payload: bytes
) -> None:
    # Random bytes almost never start with the magic and version; this reaches the checks
    # behind them.
    data = b"FW\x01" + header + payload
    try:
        frame = unpack_frame(data)
    except FrameDecodeError:
        return
    assert pack_frame(frame) == data


@given(
    index=st.integers(0, U64),
    capture_ns=st.integers(0, U64),
    send_ns=st.integers(0, U64),
    keyframe=st.booleans(),
    width=st.integers(1, 8192),
    height=st.integers(1, 8192),
    data=st.binary(min_size=1, max_size=64),
)
def test_round_trip_property(
    index: int, capture_ns: int, send_ns: int, keyframe: bool, width: int, height: int, data: bytes
) -> None:
    frame = EncodedFrame(
        index=index,
        capture_ns=capture_ns,
        send_ns=send_ns,
        keyframe=keyframe,
        width=width,
        height=height,
        data=data,
    )
    assert unpack_frame(pack_frame(frame)) == frame
