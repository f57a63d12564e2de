"""Errors of the bench package."""

from __future__ import annotations


class BenchError(Exception):
    """Root of every error raised by :mod:`bench`: a run that could not measure."""
