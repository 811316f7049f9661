"""The committed client stubs are exactly what the contract generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _gen_protos():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_have_not_drifted(tmp_path: Path) -> None:
    gen = _gen_protos()
    written = gen.generate(tmp_path)
    assert written, "nothing generated"
    committed = sorted(
        p.name for p in gen.STUB_DIR.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py"
    )
    assert sorted(p.name for p in written) == committed
    for path in written:
        assert path.read_text() == (gen.STUB_DIR / path.name).read_text(), (
            f"{path.name} drifted from protos/: run python tools/gen_protos.py"
        )


def test_every_field_of_the_contract_is_commented() -> None:
    for proto in sorted((ROOT / "protos" / "bertserve" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            is_field = (
                stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("option", "//", "syntax", "package", "import"))
            )
            is_decl = stripped.startswith(("message ", "enum ", "service ", "rpc "))
            if is_field or is_decl:
                assert lines[i - 1].strip().startswith("//"), f"{proto.name}:{i + 1} has no comment: {stripped}"
