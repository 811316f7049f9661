"""A process that runs no model (a front end, the supervisor) leaves torch out when every
installed plugin is bertserve's own, and still loads every built-in plugin's tokenizer; a plugin
of another package keeps torch importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Run in a fresh interpreter: what it leaves out is decided once, before transformers is imported.
_PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from bertserve.app.front_end_imports import keep_torch_out
kept_out = keep_torch_out()
try:
    import torch
    importable = True
except ModuleNotFoundError:
    importable = False
from bertserve.api import ModelInfo, ModelSpec, Pooling
from bertserve.app.discovery import discover_plugins
registry = discover_plugins()
tokens = {}
for plugin, source in json.loads(sys.argv[1]).items():
    model = registry.get(plugin)(ModelSpec(name=plugin, plugin=plugin, source=source, device="cpu"))
    model.fetch()
    info = ModelInfo(
        capabilities=frozenset(), devices=("cpu",), dtype="float32", hidden_size=32, max_input_tokens=64,
        poolings=(Pooling.MEAN,), default_pooling=Pooling.MEAN,
    )
    model.load_tokenizer(info)
    tokens[plugin] = model.tokenize(["héllo wörld ✨"], pairs=["and a pair"])[0].tokens
    model.unload()
print(json.dumps({"kept_out": kept_out, "importable": importable, "loaded": "torch" in sys.modules and
                  sys.modules["torch"] is not None, "tokens": tokens}))
"""


def _probe(sources: dict[str, str], env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(sources)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def _sources(tiny_models: dict[str, Path]) -> dict[str, str]:
    return {
        "bert": str(tiny_models["bert-mlm"]),
        "albert": str(tiny_models["albert"]),
        "roberta": str(tiny_models["roberta-qa"]),
        "electra": str(tiny_models["electra-discriminator"]),
        "spanbert": str(tiny_models["spanbert-qa"]),
    }


def test_with_only_bertserves_plugins_torch_stays_out_and_every_tokenizer_loads(
    tiny_models: dict[str, Path],
) -> None:
    sources = _sources(tiny_models)
    found, stderr = _probe(sources)
    assert found["kept_out"] is True
    assert found["importable"] is False
    assert found["loaded"] is False
    # The same tokens as a process with torch gives (the tokenizers are transformers' own either way).
    from bertserve.api import ModelSpec
    from bertserve.app.discovery import discover_plugins

    registry = discover_plugins()
    for plugin, source in sources.items():
        model = registry.get(plugin)(ModelSpec(name=plugin, plugin=plugin, source=source, device="cpu"))
        model.load()
        assert found["tokens"][plugin] == model.tokenize(["héllo wörld ✨"], pairs=["and a pair"])[0].tokens  # type: ignore[index]
        model.unload()
    # transformers' notice that it found no torch is the point here, not news for the log.
    assert "PyTorch was not found" not in stderr


def test_a_plugin_of_another_package_keeps_torch_importable(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    dist = tmp_path / "bertserve_other-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bertserve-other\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bertserve.plugins]\nother = bertserve_other:Plugin\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    found, _ = _probe({"bert": str(tiny_models["bert-mlm"])}, env={"PYTHONPATH": path})
    assert found["kept_out"] is False
    assert found["importable"] is True


def test_too_late_once_transformers_is_imported() -> None:
    probe = "import transformers\nfrom bertserve.app.front_end_imports import keep_torch_out\nprint(keep_torch_out())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False"]
