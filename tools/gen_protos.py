"""Generate the Python stubs of the bertserve contract into the client package.

protoc writes imports as ``from bertserve.v1 import ..._pb2``, which would resolve to the
server package of the same top-level name; the stubs live in ``bertserve_client.v1``, so
those imports are rewritten. Usage: ``python tools/gen_protos.py [OUT_DIR]``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
STUB_DIR = ROOT / "client" / "bertserve_client" / "v1"
_IMPORT = re.compile(r"^from bertserve\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Write the stubs for every proto of bertserve.v1 into out_dir; return the files written."""
    from grpc_tools import protoc  # a build-time tool: imported only when generating

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "bertserve" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((Path(tmp) / "bertserve" / "v1").iterdir()):
            dest = out_dir / src.name
            dest.write_text(_IMPORT.sub("from bertserve_client.v1 import ", src.read_text()))
            written.append(dest)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else STUB_DIR
    for path in generate(target):
        print(path.relative_to(target))
