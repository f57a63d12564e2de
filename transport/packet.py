"""Datagram layouts: the three handshake packets and the header of protected DATA packets.

Normative description: ``docs/PROTOCOL.md`` §3. Every length is checked before it is used;
decoders raise :class:`DecodeError` only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from transport.crypto import PUBLIC_KEY_BYTES, TAG_BYTES
from transport.errors import DecodeError

VERSION = 1
CID_BYTES = 8

INITIAL = 0x01
RETRY = 0x02
ACCEPT = 0x03
DATA = 0x40

MIN_INITIAL_BYTES = 1200
"""An INITIAL is padded to this, so a listener's answer (RETRY or ACCEPT, each far smaller)
stays under 3x what an unvalidated address sent (the RFC 9000 §8.1 amplification rule)."""
MAX_TOKEN_BYTES = 256
MAX_EXTENSION_BYTES = 512

EXT_PARAMS = 0x01
"""Transport parameters. 0x02 is reserved for static identity keys (PROTOCOL.md §3.5)."""

DATA_HEADER = struct.Struct("!B8sQ")
DATA_HEADER_BYTES = DATA_HEADER.size  # 17
DATA_OVERHEAD_BYTES = DATA_HEADER_BYTES + TAG_BYTES
_PARAMS = struct.Struct("!IIH")
_PARAMS_V1_BYTES = _PARAMS.size  # 10: what a first-edition peer sends

PARAM_WANTS_ARRIVALS = 0x01
"""Feature bit: send me ARRIVALS frames (PROTOCOL.md §4.8); I estimate the link from them."""
PARAM_RECOVERY = 0x02
"""Feature bit: I understand NACK and PARITY frames (PROTOCOL.md §4.9, §4.10)."""
KNOWN_PARAM_FEATURES = PARAM_WANTS_ARRIVALS | PARAM_RECOVERY
_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Params:
    """What each side tells the other in the handshake (extension 0x01)."""

    idle_timeout_ms: int
    max_ack_delay_us: int
    max_datagram_bytes: int
    features: int = 0
    """Feature bits (``PARAM_*``); unknown bits are ignored by receivers."""

    def encode(self) -> bytes:
        body = _PARAMS.pack(self.idle_timeout_ms, self.max_ack_delay_us, self.max_datagram_bytes)
        body += bytes((self.features,))
        return bytes((EXT_PARAMS,)) + _U16.pack(len(body)) + body


def parse_extensions(buf: bytes) -> dict[int, bytes]:
    """TLV list: type (1 byte), length (2 bytes), value. Unknown types are kept, not fatal."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(buf):
        if pos + 3 > len(buf):
            raise DecodeError("truncated extension")
        etype = buf[pos]
        (length,) = _U16.unpack_from(buf, pos + 1)
        pos += 3
        if pos + length > len(buf):
            raise DecodeError("truncated extension value")
        out[etype] = buf[pos : pos + length]
        pos += length
    return out


def params_from_extensions(ext: dict[int, bytes]) -> Params:
    raw = ext.get(EXT_PARAMS)
    if raw is None or len(raw) < _PARAMS.size:
        raise DecodeError("missing transport parameters")
    idle, ack_delay, datagram = _PARAMS.unpack_from(raw)
    if datagram < 256:
        raise DecodeError("peer max datagram below 256")
    features = raw[_PARAMS_V1_BYTES] if len(raw) > _PARAMS_V1_BYTES else 0
    return Params(idle, ack_delay, datagram, features & KNOWN_PARAM_FEATURES)


@dataclass(frozen=True, slots=True)
class Initial:
    client_cid: bytes
    client_public: bytes
    token: bytes
    extensions: bytes


@dataclass(frozen=True, slots=True)
class Retry:
    client_cid: bytes
    token: bytes


@dataclass(frozen=True, slots=True)
class Accept:
    client_cid: bytes
    server_cid: bytes
    server_public: bytes
    header: bytes
    """Everything before the sealed body: the AEAD's associated data."""
    sealed: bytes


def _check_version(buf: bytes) -> None:
    if len(buf) < 2:
        raise DecodeError("truncated header")
    if buf[1] != VERSION:
        raise DecodeError(f"unsupported version {buf[1]}")


def encode_initial(initial: Initial) -> bytes:
    if len(initial.token) > MAX_TOKEN_BYTES or len(initial.extensions) > MAX_EXTENSION_BYTES:
        raise ValueError("token or extensions too long")
    body = b"".join(
        (
            bytes((INITIAL, VERSION)),
            initial.client_cid,
            initial.client_public,
            _U16.pack(len(initial.token)),
            initial.token,
            _U16.pack(len(initial.extensions)),
            initial.extensions,
        )
    )
    return body + bytes(max(0, MIN_INITIAL_BYTES - len(body)))


def decode_initial(buf: bytes) -> Initial:
    _check_version(buf)
    if len(buf) < MIN_INITIAL_BYTES:
        raise DecodeError("INITIAL shorter than 1200 bytes")
    pos = 2
    cid = buf[pos : pos + CID_BYTES]
    pos += CID_BYTES
    public = buf[pos : pos + PUBLIC_KEY_BYTES]
    pos += PUBLIC_KEY_BYTES
    (token_len,) = _U16.unpack_from(buf, pos)
    pos += 2
    if token_len > MAX_TOKEN_BYTES:
        raise DecodeError("token too long")
    token = buf[pos : pos + token_len]
    pos += token_len
    (ext_len,) = _U16.unpack_from(buf, pos)
    pos += 2
    if ext_len > MAX_EXTENSION_BYTES or pos + ext_len > len(buf):
        raise DecodeError("bad extensions length")
    return Initial(cid, public, token, buf[pos : pos + ext_len])


def encode_retry(retry: Retry) -> bytes:
    return b"".join(
        (bytes((RETRY, VERSION)), retry.client_cid, _U16.pack(len(retry.token)), retry.token)
    )


def decode_retry(buf: bytes) -> Retry:
    _check_version(buf)
    if len(buf) < 2 + CID_BYTES + 2:
        raise DecodeError("truncated RETRY")
    cid = buf[2 : 2 + CID_BYTES]
    (token_len,) = _U16.unpack_from(buf, 2 + CID_BYTES)
    token = buf[4 + CID_BYTES :]
    if token_len != len(token) or token_len == 0 or token_len > MAX_TOKEN_BYTES:
        raise DecodeError("bad RETRY token length")
    return Retry(cid, token)


def accept_header(
    client_cid: bytes, server_cid: bytes, server_public: bytes, sealed_len: int
) -> bytes:
    return b"".join(
        (bytes((ACCEPT, VERSION)), client_cid, server_cid, server_public, _U16.pack(sealed_len))
    )


def decode_accept(buf: bytes) -> Accept:
    _check_version(buf)
    header_len = 2 + 2 * CID_BYTES + PUBLIC_KEY_BYTES + 2
    if len(buf) < header_len + TAG_BYTES:
        raise DecodeError("truncated ACCEPT")
    pos = 2
    client_cid = buf[pos : pos + CID_BYTES]
    server_cid = buf[pos + CID_BYTES : pos + 2 * CID_BYTES]
    pos += 2 * CID_BYTES
    public = buf[pos : pos + PUBLIC_KEY_BYTES]
    (sealed_len,) = _U16.unpack_from(buf, header_len - 2)
    sealed = buf[header_len:]
    if sealed_len != len(sealed) or sealed_len > MAX_EXTENSION_BYTES + TAG_BYTES:
        raise DecodeError("bad ACCEPT length")
    return Accept(client_cid, server_cid, public, buf[:header_len], sealed)


def packet_type(buf: bytes) -> int:
    """The first byte, checked to be a known type; DATA's low bits are reserved and zero."""
    if not buf:
        raise DecodeError("empty datagram")
    first = buf[0]
    if first not in (INITIAL, RETRY, ACCEPT, DATA):
        raise DecodeError(f"unknown packet type 0x{first:02x}")
    return first


def destination_cid(buf: bytes) -> bytes:
    """The connection ID a datagram is addressed to (the client's for handshake replies)."""
    if len(buf) < 2 + CID_BYTES:
        raise DecodeError("truncated header")
    if buf[0] == DATA:
        return buf[1 : 1 + CID_BYTES]
    return buf[2 : 2 + CID_BYTES]
