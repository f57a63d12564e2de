"""``framewire demo``: a receiver and a sender as two child processes on 127.0.0.1.

The children are this same command line (``python -m framewire receive|send``) with the hidden
``--progress-json`` flag: each prints JSON lines on stdout, ``{"ready": port}`` (receiver,
first), ``{"progress": {...}}`` about once a second and ``{"result": {...}}`` at the end, and
keeps stderr for its one error line. The parent renders the progress of both as one live line
and merges the two results.

Two processes rather than two tasks in one loop: that is how the toolkit is used, and the
sender's encoding and the receiver's decoding would otherwise delay each other's packets.
Both clocks are the machine's CLOCK_MONOTONIC, so capture-to-decode latency needs no offset.

Cleanup: the children are killed on every way out of :func:`run_demo` (error, Ctrl-C,
deadline); and with ``--parent-pipe`` they exit by themselves when the parent's end of their
stdin closes, so even a parent killed with SIGKILL leaves no orphans streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from framewire.errors import CommandError

if TYPE_CHECKING:
    from bench.relay import RelayProcess

__all__ = ["DemoOptions", "merge_results", "run_demo"]

READY_TIMEOUT_S = 10.0
"""Child start-up (imports, socket) on a loaded 2-core machine takes well under a second."""
SLACK_S = 5.0
"""Beyond ``seconds``: start-up of both children, connect, close, results."""
TERMINATE_GRACE_S = 1.0
STDERR_LINES_KEPT = 20
PREFIX = "framewire: error: "

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    seconds: float
    width: int
    height: int
    fps: float
    bitrate_bps: int | None
    """None: the sender follows the rate controller (``--bitrate auto``)."""
    loop: str
    """The resolved loop name the children are told to use."""
    relay_args: tuple[str, ...] = ()
    """Impairment options for a relay between the two (``framewire impair``); () for none."""
    scenario: str | None = None
    frame_log: bool = False
    """Ask the receiver for its per-frame latencies and add them (``frame_log``)."""


class _Child:
    """One child process: its JSON lines routed to ``ready``/``progress``/``result``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[int] = loop.create_future()
        self.result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.progress: dict[str, Any] | None = None
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._stderr_done = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self._read_stdout()),
            asyncio.ensure_future(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, name: str, args: list[str]) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "framewire",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, proc)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing): the protocol is whole JSON lines
            if not isinstance(obj, dict):
                continue
            if "ready" in obj and not self.ready.done():
                self.ready.set_result(int(obj["ready"]))
            elif "progress" in obj:
                self.progress = obj["progress"]
            elif "result" in obj and not self.result.done():
                self.result.set_result(obj["result"])
        # stdout closed: the child is exiting. Without a result, it failed; say why.
        code = await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stderr_done.wait(), 1.0)
        error = CommandError(f"{self.name} {self._failure(code)}")
        for future in (self.ready, self.result):
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: an unawaited ready must not warn

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            while line := await self.proc.stderr.readline():
                text = line.decode(errors="replace").rstrip()
                if text:
                    self.stderr.append(text)
        finally:
            self._stderr_done.set()

    def _failure(self, code: int) -> str:
        for text in reversed(self.stderr):
            if text.startswith(PREFIX):
                return f"failed: {text[len(PREFIX) :]}"
        if self.stderr:
            return f"exited with status {code}: {self.stderr[-1]}"
        return f"exited with status {code} and no result"

    async def stop(self) -> None:
        """Make sure the process is gone: SIGTERM, then SIGKILL after a grace period."""
        proc = self.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), TERMINATE_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def kill_now(self) -> None:
        """Synchronous last resort, for when the event loop is going away."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def _child_args(options: DemoOptions) -> tuple[list[str], Callable[[int], list[str]]]:
    common = ["--loop", options.loop]
    child_flags = ["--quiet", "--progress-json", "--parent-pipe"]
    receiver = [
        *common,
        "receive",
        "--listen",
        "127.0.0.1:0",
        # The receiver stops when the sender closes the session; this is only a backstop.
        "--seconds",
        f"{options.seconds + SLACK_S:g}",
        "--accept-timeout",
        f"{READY_TIMEOUT_S:g}",
        *child_flags,
        *(["--frame-log"] if options.frame_log else []),
    ]

    def sender(port: int) -> list[str]:
        return [
            *common,
            "send",
            "--to",
            f"127.0.0.1:{port}",
            "--seconds",
            f"{options.seconds:g}",
            "--size",
            f"{options.width}x{options.height}",
            "--fps",
            f"{options.fps:g}",
            "--bitrate",
            "auto" if options.bitrate_bps is None else str(options.bitrate_bps),
            *child_flags,
        ]

    return receiver, sender


async def run_demo(
    options: DemoOptions,
    on_progress: Callable[[dict[str, Any] | None, dict[str, Any] | None], None] | None = None,
) -> dict[str, Any]:
    """Run both children; return the merged result. Raises :class:`CommandError`."""
    deadline = time.monotonic() + options.seconds + SLACK_S
    receiver_args, sender_args = _child_args(options)
    children: list[_Child] = []
    ticker: asyncio.Future[None] | None = None
    relay: RelayProcess | None = None
    try:
        receiver = await _Child.start("receiver", receiver_args)
        children.append(receiver)
        port = await _wait(receiver.ready, min(READY_TIMEOUT_S, deadline - time.monotonic()))
        if options.relay_args:
            relay = _start_relay(options, port)
            port = relay.addr[1]
        sender = await _Child.start("sender", sender_args(port))
        children.append(sender)
        if on_progress is not None:
            ticker = asyncio.ensure_future(_tick(on_progress, sender, receiver))
        # Whichever fails first is the story; the receiver normally ends right after the
        # sender closes the session.
        results = asyncio.gather(sender.result, receiver.result)
        try:
            sent, received = await _wait(results, deadline - time.monotonic())
        except BaseException:
            results.cancel()
            with contextlib.suppress(BaseException):
                await results
            raise
        for child in children:  # both have printed their result: let them exit on their own
            await _wait_exit(child)
    except BaseException:
        # Kill first, synchronously: on Ctrl-C a second interrupt may cut the awaits below.
        for child in children:
            child.kill_now()
        raise
    finally:
        if ticker is not None:
            ticker.cancel()
        await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
        link = relay.stop() if relay is not None else None
    result = merge_results(sent, received, options)
    if link is not None:
        result["link"] = {"scenario": options.scenario, "relay": link}
    return result


def _start_relay(options: DemoOptions, port: int) -> RelayProcess:
    from bench import BenchError
    from bench.relay import RelayProcess

    try:
        return RelayProcess(("127.0.0.1", port), options.relay_args)
    except BenchError as exc:
        raise CommandError(str(exc)) from exc


async def _wait_exit(child: _Child) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(child.proc.wait(), TERMINATE_GRACE_S)


async def _wait(awaitable: asyncio.Future[T], timeout_s: float) -> T:
    try:
        return await asyncio.wait_for(awaitable, max(0.0, timeout_s))
    except TimeoutError:
        raise CommandError("the demo did not finish in time; its processes were stopped") from None


async def _tick(
    on_progress: Callable[[dict[str, Any] | None, dict[str, Any] | None], None],
    sender: _Child,
    receiver: _Child,
) -> None:
    while True:
        await asyncio.sleep(1.0)
        on_progress(sender.progress, receiver.progress)


def merge_results(
    sent: dict[str, Any], received: dict[str, Any], options: DemoOptions
) -> dict[str, Any]:
    """One report from the two children's results (field names as documented in --help)."""
    link = sent["session"]  # the sender's session: its RTT and losses come from the video
    return {
        "size": f"{options.width}x{options.height}",
        "fps": options.fps,
        "seconds": options.seconds,
        "loop": options.loop,
        "video_channel": sent["video_channel"],
        "frame_deadline_s": sent["frame_deadline_s"],
        "frames_sent": sent["frames_sent"],
        "frames_received": received["frames_received"],
        "frames_decoded": received["frames_decoded"],
        "frames_missing": received["frames_missing"],
        "frames_late": received["frames_late"],
        "decode_errors": received["decode_errors"],
        "keyframes": sent["keyframes_sent"],
        "keyframe_requests": received["keyframe_requests"],
        "frame_latency_ms": received["frame_latency_ms"],
        "encode_ms_p50": sent["encode_ms"]["p50"],
        "decode_ms_p50": received["decode_ms"]["p50"],
        "transport_ms_p50": received["transport_ms"]["p50"],
        "encode_ms": sent["encode_ms"],
        "decode_ms": received["decode_ms"],
        "transport_ms": received["transport_ms"],
        "tick_late_ms": sent["tick_late_ms"],
        "ticks_skipped": sent["ticks_skipped"],
        "bitrate_kbps": sent["bitrate_kbps"],
        "bitrate_target_kbps": sent["bitrate_target_kbps"],
        "sent_fps": sent["fps"],
        "srtt_ms": link["srtt_ms"],
        "min_rtt_ms": link["min_rtt_ms"],
        "packets_sent": link["packets_sent"],
        "packets_lost": link["packets_lost"],
        "retransmissions": link["retransmissions"],
        "messages_expired": link["messages_expired"],
        "messages_late": received["session"]["messages_late"],
        **({"frame_log": received["frame_log"]} if "frame_log" in received else {}),
    }
