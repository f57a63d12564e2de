"""Layering: stream builds on the layers below it and never on bench or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import stream

FORBIDDEN = {"bench", "framewire"}  # transport and discovery are below stream (DESIGN.md)


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_stream_does_not_import_upper_layers() -> None:
    package = Path(stream.__file__).parent
    offenders = {
        path.name: sorted(_imported_roots(path) & FORBIDDEN) for path in package.glob("*.py")
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}
