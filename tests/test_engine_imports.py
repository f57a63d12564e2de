"""Import rules, read from the source: engines are sans-I/O, and imports point down only.

STYLE house rule 1: engine modules import no ``asyncio``, ``socket``, ``time`` or ``av``; only
the adapters (``aio.py``, ``udp.py``, ``poll.py``) touch sockets and clocks. DESIGN "Layers":
``transport`` and ``discovery`` are independent and import nothing above them; ``stream``
builds on both; ``bench`` may use all three; nothing imports the command line (``framewire``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {"aio.py", "udp.py", "poll.py"}
IO_MODULES = {"asyncio", "socket", "time", "av"}
"""What an engine must not import (STYLE rule 1)."""

LAYERS: dict[str, set[str]] = {
    "transport": {"stream", "bench", "framewire", "discovery"},
    "discovery": {"stream", "bench", "framewire", "transport"},
    "stream": {"bench", "framewire"},
    "bench": {"framewire"},
}
"""Package -> the packages it must not import."""


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (also inside functions), with relative
    imports resolved against ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: the packages are flat, so any level means ``package``
                module = f"{package}.{node.module}" if node.module else package
            else:
                module = node.module or ""
            found.add(module)
            # ``from transport import aio`` imports the module transport.aio.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def roots(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def engine_modules() -> list[Path]:
    paths = sorted((ROOT / "transport").glob("*.py"))
    return [p for p in paths if p.name not in ADAPTERS]


def test_the_walk_sees_the_engine() -> None:
    names = {p.name for p in engine_modules()}
    assert {"session.py", "listener.py", "sender.py", "reassembly.py", "wire.py"} <= names
    # And it would catch an offender: the adapters do import what engines must not.
    adapters = set().union(
        *(imported_modules(ROOT / "transport" / name, "transport") for name in ADAPTERS)
    )
    assert {"asyncio", "socket", "time"} <= roots(adapters)


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: p.name)
def test_engine_module_does_no_io(path: Path) -> None:
    imported = imported_modules(path, "transport")
    assert roots(imported) & IO_MODULES == set()
    if path.name != "__init__.py":  # the package's face re-exports the adapters, by design
        adapters = {f"transport.{name.removesuffix('.py')}" for name in ADAPTERS}
        assert imported & adapters == set(), "an engine module pulls in an adapter"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_down_only(package: str) -> None:
    offenders: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = roots(imported_modules(path, package)) & LAYERS[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}
