"""The layers keep to their rooms, as .importlinter states them: the edge and the serving core
reach no torch, nothing below the edge reaches gRPC, the runtime and the plugins reach no layer
above them, the shared modules reach no layer, and the client no server code. Indirect and
relative imports count. Each planted violation below must break the contract it names."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from check_layers import check  # noqa: E402


def test_the_layers_hold() -> None:
    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 6 kept, 0 broken." in done.stdout


def test_every_package_of_the_tree_is_in_the_distribution() -> None:
    """pyproject lists bertserve's packages one by one (the folder is not the package's name): a
    package left out would be missing from the wheel, and so from the container image."""
    # (The list is read with a pattern: tomllib needs Python 3.11, and bertserve supports 3.10.)
    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert block is not None, "pyproject.toml lists no packages"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {"bertserve.plugins"} | {
        ".".join(("bertserve", *init.parent.relative_to(ROOT / "server").parts))
        for init in (ROOT / "server").rglob("__init__.py")
    }
    assert listed == found


#: (the file planted, its text, the contract it must break, a line of the chain reported)
PLANTED = [
    (
        "server/serving/planted.py",
        "from ..runtime import heads  # relative, and torch only through it\n",
        "The edge and the serving core reach no torch, transformers or runtime module",
        "bertserve.serving.planted -> bertserve.runtime.heads",
    ),
    (
        "server/serving/planted.py",
        "from bertserve.edge import status\n",
        "The application wires the edge, the edge calls the serving core, and never the other way",
        "bertserve.serving.planted -> bertserve.edge.status",
    ),
    (
        "server/observability/planted.py",
        "import bertserve.serving.router\n",
        "The shared modules import no layer and no torch",
        "bertserve.observability.planted -> bertserve.serving.router",
    ),
    (
        "plugins/planted.py",
        "from bertserve.observability import planted_helper\n",
        "Below the edge nothing reaches gRPC or the generated stubs",
        "bertserve.observability.planted_helper -> grpc",
    ),
    (
        "client/bertserve_client/planted.py",
        "from bertserve.api import Pooling\n",
        "The client imports no server code and no torch",
        "bertserve_client.planted -> bertserve.api",
    ),
]


@pytest.mark.parametrize(("where", "text", "contract", "chain"), PLANTED, ids=[p[0] + ":" + p[3] for p in PLANTED])
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, where: str, text: str, contract: str, chain: str
) -> None:
    tree = tmp_path / "tree"
    for part in ("server", "plugins", "client/bertserve_client"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    (tree / where).write_text(text)
    # An indirect chain: the plugin imports a shared module that imports gRPC.
    (tree / "server/observability/planted_helper.py").write_text("import grpc\n")
    done = check(tree, tree / ".importlinter")
    report = " ".join(done.stdout.split())  # the report wraps long lines
    assert done.returncode != 0, report
    assert f"{contract} BROKEN" in report
    assert chain in report
