"""Errors of the transport package.

One root, ``TransportError``. ``DecodeError`` is for bytes that came from the network: the
engines catch it at their boundary and count the datagram as a decode failure, so it never
reaches the event loop. ``UsageError`` is for API misuse by the local program.
"""

from __future__ import annotations


class TransportError(Exception):
    """Root of every error raised by :mod:`transport`."""


class DecodeError(TransportError):
    """Bytes from the network that do not decode (truncated, malformed, unauthenticated)."""


class UsageError(TransportError):
    """The local program misused the API (unknown channel, message too large, closed session)."""


class SessionClosedError(TransportError):
    """An operation on a session that has closed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"session closed: {reason}")
        self.reason = reason


class HandshakeTimeoutError(TransportError):
    """The peer did not complete the handshake in time."""
