"""Choosing the event-loop implementation (uvloop where installed, else asyncio's own)."""

from __future__ import annotations

import asyncio
import importlib.util

from bench.errors import BenchError

LOOPS = ("auto", "uvloop", "asyncio")


def resolve_loop(name: str) -> str:
    """``auto`` becomes ``uvloop`` when it is installed, else ``asyncio``."""
    if name not in LOOPS:
        raise BenchError(f"unknown loop {name!r}; choose one of {', '.join(LOOPS)}")
    if name == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if name == "uvloop" and not importlib.util.find_spec("uvloop"):
        raise BenchError("uvloop is not installed here; use --loop asyncio")
    return name


def install_loop(name: str) -> str:
    """Make ``asyncio.run`` use the chosen loop; return the name in force."""
    resolved = resolve_loop(name)
    if resolved == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)
    return resolved
