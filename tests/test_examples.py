"""The programs in examples/ run on loopback and succeed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.loopback
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("async_messages.py", ["--count", "50"], "in order=True"),
        ("game_tick.py", ["--ticks", "90", "--hz", "60"], "score events"),
        ("bad_link.py", ["--scenario", "lan", "--seconds", "1"], "through the relay: 60 of 60"),
        ("stream_video.py", ["--seconds", "2", "--out", "{tmp}/shown.mkv"], "; wrote "),
    ],
)
def test_example_runs(script: str, args: list[str], expect: str, tmp_path: Path) -> None:
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert expect in result.stdout
