"""Errors raised by the :mod:`stream` package.

Split the way h11 splits them: :class:`FrameDecodeError` means the peer (or the network) sent
bytes we cannot use, :class:`StreamUsageError` means the caller misused the API. Anything else
escaping this package is a bug.
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every error raised by the :mod:`stream` package."""


class FrameDecodeError(StreamError):
    """Bytes from the network are not a valid frame (bad header, truncated, undecodable)."""


class StreamUsageError(StreamError):
    """The API was called with arguments or in a state it does not support."""


class SourceEnded(StreamError):
    """The source has no more pictures (the end of a file that does not loop)."""
