"""What a run-time model entry may ask, and how it is read: a size cap, no YAML anchors or aliases,
no deep nesting, parsed off the event loop; allow_pickle and sources only as the operator allows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bertserve.app.server import BertServer
from bertserve.runtime.sources import source_allowed
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

from conftest import NO_RETRIES, pickle_checkpoint, start_server

# Ten levels of ten aliases each: 10^10 leaves once expanded (hours, and far more memory than
# this machine has), in a few hundred bytes.
BOMB = "\n".join(
    [
        "name: bomb",
        "plugin: bert",
        'l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]',
        *(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)),
        "source: *l9",
    ]
)


def _config(tmp: Path, tiny: dict[str, Path], admin: str = "") -> Path:
    config = tmp / "c.yaml"
    config.write_text(
        "server:\n  address: 127.0.0.1\n  port: 0\n"
        + (f"  admin: {admin}\n" if admin else "")
        + "models:\n"
        + f"  - {{name: bert, plugin: bert, source: '{tiny['bert']}', device: cpu}}\n"
    )
    return config


@pytest.fixture(scope="module")
async def default_server(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BertServer]:
    server = await start_server(_config(tmp_path_factory.mktemp("entries"), tiny_models))
    yield server
    await server.stop(grace=1)


@pytest.fixture(scope="module")
def trusted(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of models the operator trusts, with a pickle checkpoint in it."""
    root = tmp_path_factory.mktemp("trusted")
    pickle_checkpoint(tiny_models["bert"], root)
    return root


@pytest.fixture(scope="module")
async def strict_server(
    tiny_models: dict[str, Path], trusted: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BertServer]:
    admin = f"{{allow_pickle: true, allowed_sources: ['{trusted}', 'trusted-org/*'], max_entry_bytes: 2048}}"
    server = await start_server(_config(tmp_path_factory.mktemp("strict"), tiny_models, admin))
    yield server
    await server.stop(grace=1)


async def _load(server: BertServer, entry: str) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=NO_RETRIES) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        try:
            await stub.LoadModel(model_service_pb2.LoadModelRequest(entry=entry), timeout=60)
        except grpc.aio.AioRpcError as e:
            return e.code(), str(e.details())
    return grpc.StatusCode.OK, ""


async def test_an_alias_bomb_is_refused_at_once_and_other_calls_go_on(default_server: BertServer) -> None:
    assert len(BOMB) < 600
    async with grpc.aio.insecure_channel(f"127.0.0.1:{default_server.port}", options=NO_RETRIES) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        encoder = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        started = time.perf_counter()
        bomb = models.LoadModel(model_service_pb2.LoadModelRequest(entry=BOMB), timeout=30)
        embed = encoder.Embed(encoder_service_pb2.EmbedRequest(model="bert", inputs=["meanwhile"]), timeout=30)
        outcomes: tuple[Any, Any] = await asyncio.gather(bomb, embed, return_exceptions=True)
        refused, answered = outcomes
        seconds = time.perf_counter() - started
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert (refused.code(), refused.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "entry: YAML anchors are not accepted in a model entry (&l0)",
    )
    assert answered.model == "bert"
    # Not a performance bound: expanding the entry would take hours; refusing it takes milliseconds.
    assert seconds < 5, f"{seconds:.1f}s"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: x, plugin: bert, source: *nowhere}",
            "entry: YAML aliases are not accepted in a model entry (*nowhere)",
        ),
        ("{name: &n x, plugin: bert}", "entry: YAML anchors are not accepted in a model entry (&n)"),
        ("{name: x, plugin: bert, options: " + "[" * 40 + "]" * 40 + "}", "entry: nested deeper than 16 levels"),
    ],
)
async def test_entries_with_anchors_aliases_or_deep_nesting_are_refused(
    default_server: BertServer, entry: str, message: str
) -> None:
    assert await _load(default_server, entry) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_an_entry_over_the_size_cap_is_refused_naming_the_limit(
    default_server: BertServer, strict_server: BertServer
) -> None:
    entry = "{name: big, plugin: bert, source: '" + "x" * 17000 + "'}"
    size = len(entry)
    assert await _load(default_server, entry) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"entry: {size} bytes, over the limit of 16384 bytes for a model entry (server.admin.max_entry_bytes)",
    )
    entry = "{name: big, plugin: bert, source: '" + "x" * 2100 + "'}"
    assert await _load(strict_server, entry) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"entry: {len(entry)} bytes, over the limit of 2048 bytes for a model entry (server.admin.max_entry_bytes)",
    )


async def test_allow_pickle_in_an_entry_needs_the_servers_consent(
    default_server: BertServer, strict_server: BertServer, trusted: Path
) -> None:
    entry = f"{{name: pickled, plugin: bert, source: '{trusted / 'pickle-checkpoint'}', allow_pickle: true}}"
    assert await _load(default_server, entry) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "entry.allow_pickle: this server does not let a run-time entry load pickle weights; the operator can allow "
        "it with server.admin.allow_pickle: true, or list the model in the configuration file",
    )
    assert "pickled" not in default_server.router
    assert await _load(strict_server, entry) == (grpc.StatusCode.OK, "")
    assert "pickled" in strict_server.router


async def test_a_token_limit_that_the_special_tokens_fill_fails_the_load_naming_the_setting(
    default_server: BertServer, tiny_models: dict[str, Path]
) -> None:
    entry = f"{{name: no-room, plugin: bert, source: '{tiny_models['bert']}', max_input_tokens: 3}}"
    assert await _load(default_server, entry) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "model 'no-room' failed to load: ConfigError: max_input_tokens 3 leaves no room for text: the tokenizer of "
        "model 'no-room' adds 2 special tokens to a text and 3 to a pair; set at least 4",
    )
    room = f"{{name: room, plugin: bert, source: '{tiny_models['bert']}', max_input_tokens: 4}}"
    assert await _load(default_server, room) == (grpc.StatusCode.OK, "")
    assert default_server.router.get("room").ready().max_input_tokens == 4
    async with grpc.aio.insecure_channel(f"127.0.0.1:{default_server.port}", options=NO_RETRIES) as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        request = encoder_service_pb2.EmbedRequest(model="room", inputs=["more words than four tokens"], truncate=True)
        reply = await stub.Embed(request, timeout=30)
        assert reply.usage.tokens == 4


async def test_a_source_outside_the_allowed_list_is_refused(
    strict_server: BertServer, tiny_models: dict[str, Path], trusted: Path
) -> None:
    outside = tiny_models["bert"]
    for source in (str(outside), "other-org/model", f"{trusted}/../{outside.name}"):
        assert await _load(strict_server, f"{{name: elsewhere, plugin: bert, source: '{source}'}}") == (
            grpc.StatusCode.PERMISSION_DENIED,
            f"entry.source: '{source}' is not among the sources this server allows run-time entries to load "
            "(server.admin.allowed_sources)",
        )
    assert "elsewhere" not in strict_server.router


def test_allowed_sources_match_roots_after_resolving_links_and_hub_ids_by_glob(tmp_path: Path) -> None:
    root, other = tmp_path / "models", tmp_path / "other"
    (root / "a").mkdir(parents=True)
    (other / "b").mkdir(parents=True)
    (root / "link").symlink_to(other / "b")
    allowed = (str(root), "trusted-org/*", "exact/model")
    assert source_allowed(str(root / "a"), allowed)
    assert not source_allowed(str(other / "b"), allowed)
    assert not source_allowed(str(root / "link"), allowed), "a link out of the root is where it points"
    assert not source_allowed(str(root / "a" / ".." / ".." / "other" / "b"), allowed)
    assert source_allowed("trusted-org/bert-base", allowed) and source_allowed("exact/model", allowed)
    assert not source_allowed("exact/model-2", allowed) and not source_allowed("evil/trusted-org", allowed)
    assert source_allowed("anything/at-all", ()), "no list: every source"
