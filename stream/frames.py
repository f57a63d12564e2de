"""Encoded video frames and their versioned wire header.

Wire layout (network byte order), version 1, 32 bytes, followed by the payload:

====== ===== ==================================================================
offset size  field
====== ===== ==================================================================
0      2     magic ``b"FW"``
2      1     version (1)
3      1     flags: bit 0 = keyframe; the other bits are reserved and must be 0
4      8     index (u64, encoder frame counter)
12     8     capture_ns (u64, sender's ``time.monotonic_ns()`` at capture)
20     8     send_ns (u64, sender's ``time.monotonic_ns()`` when handed to the transport)
28     2     width (u16, 1..8192)
30     2     height (u16, 1..8192)
32     n     payload: one H.264 Annex-B access unit, n >= 1
====== ===== ==================================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from stream.errors import FrameDecodeError, StreamUsageError

MAGIC = b"FW"
VERSION = 1
MAX_DIMENSION = 8192

_FLAG_KEYFRAME = 0x01
_KNOWN_FLAGS = _FLAG_KEYFRAME
_HEADER = struct.Struct("!2sBBQQQHH")
HEADER_SIZE = _HEADER.size


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedFrame:
    """One encoded access unit plus the timing the receiver needs to measure latency.

    ``send_ns`` is 0 until the sender hands the frame to the transport.
    """

    index: int
    capture_ns: int
    send_ns: int = 0
    keyframe: bool
    width: int
    height: int
    data: bytes


def pack_frame(frame: EncodedFrame) -> bytes:
    """Serialize ``frame`` as header + payload.

    Raises :class:`StreamUsageError` when a field does not fit the wire format.
    """
    if not (0 < frame.width <= MAX_DIMENSION and 0 < frame.height <= MAX_DIMENSION):
        raise StreamUsageError(f"frame size {frame.width}x{frame.height} out of range")
    if not frame.data:
        raise StreamUsageError("frame payload is empty")
    flags = _FLAG_KEYFRAME if frame.keyframe else 0
    try:
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            flags,
            frame.index,
            frame.capture_ns,
            frame.send_ns,
            frame.width,
            frame.height,
        )
    except struct.error as exc:  # negative or > u64 index/timestamps
        raise StreamUsageError(f"frame header field out of range: {exc}") from exc
    return header + frame.data


def unpack_frame(data: bytes | memoryview) -> EncodedFrame:
    """Parse bytes produced by :func:`pack_frame`.

    Raises :class:`FrameDecodeError`, and nothing else, for any malformed input.
    """
    if len(data) <= HEADER_SIZE:
        raise FrameDecodeError(f"frame too short: {len(data)} bytes")
    # unpack_from cannot fail here: the length was checked and every field is fixed-size.
    magic, version, flags, index, capture_ns, send_ns, width, height = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameDecodeError("bad frame magic")
    if version != VERSION:
        raise FrameDecodeError(f"unsupported frame version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise FrameDecodeError(f"reserved frame flags set: {flags:#04x}")
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise FrameDecodeError(f"frame size {width}x{height} out of range")
    return EncodedFrame(
        index=index,
        capture_ns=capture_ns,
        send_ns=send_ns,
        keyframe=bool(flags & _FLAG_KEYFRAME),
        width=width,
        height=height,
        data=bytes(data[HEADER_SIZE:]),
    )
