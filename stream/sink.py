"""Sinks: where decoded pictures end up."""

from __future__ import annotations

from typing import Protocol

from stream.codec import DecodedPicture

__all__ = ["DiscardSink", "Sink"]


class Sink(Protocol):
    """Consumes decoded pictures. ``consume`` runs on the event loop, so it must be quick."""

    def consume(self, picture: DecodedPicture) -> None: ...


class DiscardSink:
    """Drops every picture, counting pictures and their encoded bytes (for benchmarks)."""

    def __init__(self) -> None:
        self.frames = 0
        self.encoded_bytes = 0

    def consume(self, picture: DecodedPicture) -> None:
        self.frames += 1
        self.encoded_bytes += picture.encoded_bytes
