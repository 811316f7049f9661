"""Check the layers' import contracts (.importlinter) over the source tree as Python imports it.

The package ``bertserve`` is the folder ``server/`` with ``plugins/`` as its subpackage
``bertserve.plugins`` (see pyproject.toml), so a tool that walks one folder never sees the plugins.
This copies both into one temporary ``bertserve/`` (with the client beside it) and runs
import-linter there. Usage: ``python tools/check_layers.py [--tree DIR]``; exit status 0 when
every contract holds. ``--tree`` checks another checkout's layout (the tests plant violations so).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def assemble(tree: Path, into: Path) -> None:
    """The packages of tree laid out as they import: bertserve/ (with plugins/) and bertserve_client/."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(tree / "server", into / "bertserve", ignore=ignore)
    shutil.copytree(tree / "plugins", into / "bertserve" / "plugins", ignore=ignore)
    shutil.copytree(tree / "client" / "bertserve_client", into / "bertserve_client", ignore=ignore)


def check(tree: Path = ROOT, config: Path = ROOT / ".importlinter") -> subprocess.CompletedProcess[str]:
    """Run the contracts over tree; the completed lint-imports, its report in stdout."""
    with tempfile.TemporaryDirectory(prefix="layers-") as scratch:
        assemble(tree, Path(scratch))
        env = {**os.environ, "PYTHONPATH": scratch}
        # lint-imports itself, from this interpreter, whatever is on the PATH.
        lint = "from importlinter.cli import lint_imports_command; lint_imports_command()"
        command = [sys.executable, "-c", lint, str(config), "--no-cache"]
        return subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    args = parser.parse_args()
    done = check(args.tree, args.tree / ".importlinter")
    sys.stdout.write(done.stdout + done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
