"""The layers keep to their rooms: the serving core imports neither gRPC nor torch, the torch
runtime and the plugins never import gRPC, and nothing below the edge imports the edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("server/serving", ("grpc", "torch", "bertserve.edge", "bertserve_client")),
        ("server/runtime", ("grpc", "bertserve.edge", "bertserve.serving", "bertserve_client")),
        ("plugins", ("grpc", "bertserve.edge", "bertserve.serving", "bertserve_client")),
    ],
)
def test_a_layer_imports_only_what_it_may(folder: str, forbidden: tuple[str, ...]) -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / folder).glob("*.py"))
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    }
    assert not offending
