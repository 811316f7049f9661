"""The capability table against the contract, and plugins against the table: a plugin that claims
what it cannot serve fails as its model loads, naming the method; a plugin written against the
older contract (one method per head) still loads and serves, with a warning saying what to write."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve.api import Capability, EmbedOutput, EncoderPlugin, Encoding, Head, ModelInfo, Pooling
from bertserve.app.config import load_config
from bertserve.app.discovery import PluginRegistry, discover_plugins
from bertserve.app.server import BertServer
from bertserve.capabilities import CAPABILITIES
from bertserve.edge.servicers import UNARY
from bertserve.plugins.bert import BertPlugin
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, heads_pb2, model_service_pb2
from bertserve_client.v1 import model_service_pb2_grpc as model_grpc

TEXTS = ["the first text to classify", "a second one"]


def test_every_capability_has_a_row_whose_values_are_the_contracts() -> None:
    assert set(CAPABILITIES) == set(Capability)
    methods = {m.name for m in encoder_service_pb2.DESCRIPTOR.services_by_name["EncoderService"].methods}
    for capability, row in CAPABILITIES.items():
        assert row.capability is capability
        assert model_service_pb2.Capability.Name(row.proto_value) == f"CAPABILITY_{capability.name}"
        assert row.rpc in methods
        assert row.rpc in UNARY, f"{row.rpc} has no row in the servicers' table"
        if row.head is not None:
            assert UNARY[row.rpc].flow.capability is capability
    assert set(UNARY) | {"EmbedStream"} == methods


class _Delegating(EncoderPlugin):
    """A plugin of its own, not a TransformersPlugin: it runs a real BERT plugin inside, and offers
    the methods its subclass names."""

    variant = "delegating"
    claims: frozenset[Capability] = frozenset()

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.inner = BertPlugin(spec)

    def load(self) -> ModelInfo:
        info = self.inner.load()
        return ModelInfo(**{**info.__dict__, "capabilities": info.capabilities | self.claims})

    def tokenize(self, texts: Sequence[str], **kwargs: Any) -> list[Encoding]:
        return self.inner.tokenize(texts, **kwargs)

    def embed(self, batch: Sequence[Encoding], *, pooling: Pooling, with_token_states: bool) -> EmbedOutput:
        return self.inner.embed(batch, pooling=pooling, with_token_states=with_token_states)

    def unload(self) -> None:
        self.inner.unload()


class OlderContract(_Delegating):
    """Written against the older contract: Classify through sequence_logits."""

    variant = "older-contract"

    def sequence_logits(self, batch: Sequence[Encoding]) -> np.ndarray:
        return np.stack(self.inner.head_logits(Head.SEQUENCE_CLASSIFICATION, batch))


class ClaimsClassify(_Delegating):
    """Claims Classify on an encoder without implementing any head."""

    variant = "claims-classify"
    claims = frozenset({Capability.CLASSIFY})


class ClaimsEntities(_Delegating):
    """Claims ClassifyTokens with the head but without tokens_to_string, which entities need."""

    variant = "claims-entities"
    claims = frozenset({Capability.CLASSIFY_TOKENS})

    def head_logits(self, head: Head, batch: Sequence[Encoding]) -> list[np.ndarray]:
        return [np.zeros((len(e), 2), np.float32) for e in batch]


@pytest.fixture(scope="module")
async def served(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, str]]:
    nli = tiny_models["bert-nli"]
    config = tmp_path_factory.mktemp("capabilities") / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        f"  - {{name: nli, plugin: bert, source: '{nli}'}}\n"
        f"  - {{name: older, plugin: older-contract, source: '{nli}'}}\n"
        f"  - {{name: claims-classify, plugin: claims-classify, source: '{tiny_models['bert']}'}}\n"
        f"  - {{name: claims-entities, plugin: claims-entities, source: '{tiny_models['bert']}'}}\n"
    )
    plugins = {p.variant: p for p in (OlderContract, ClaimsClassify, ClaimsEntities)}
    registry = PluginRegistry({**discover_plugins().plugins, **plugins}, {})
    log = _Records()
    logging.getLogger("bertserve").addHandler(log)
    server = BertServer(load_config(config), registry)
    try:
        await server.start()
        await server.wait_until_loaded()
        yield f"127.0.0.1:{server.port}", "\n".join(log.lines)
    finally:
        logging.getLogger("bertserve").removeHandler(log)
        await server.stop(grace=1)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _classify(target: str, model: str) -> heads_pb2.ClassifyResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        request = heads_pb2.ClassifyRequest(model=model, inputs=TEXTS, top_k=0)
        reply: heads_pb2.ClassifyResponse = await stub.Classify(request, timeout=30)
        return reply


async def _model(target: str, name: str) -> model_service_pb2.Model:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await model_grpc.ModelServiceStub(channel).GetModel(model_service_pb2.GetModelRequest(name=name))
        return reply.model


async def test_a_plugin_of_the_older_contract_serves_and_is_told_what_to_write(served: tuple[str, str]) -> None:
    target, log = served
    ours, older = await _classify(target, "nli"), await _classify(target, "older")
    assert [[(s.label, s.score) for s in r.labels] for r in older.results] == [
        [(s.label, s.score) for s in r.labels] for r in ours.results
    ]
    assert (
        "plugin OlderContract serves Classify through sequence_logits(), of the older plugin contract: "
        "implement head_logits(head, batch) for Head.SEQUENCE_CLASSIFICATION instead"
    ) in log


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            "claims-classify",
            "PluginContractError: plugin ClaimsClassify claims Classify but does not implement head_logits() for "
            "Head.SEQUENCE_CLASSIFICATION: implement it, or leave CLASSIFY out of ModelInfo.capabilities",
        ),
        (
            "claims-entities",
            "PluginContractError: plugin ClaimsEntities claims ClassifyTokens but does not implement "
            "tokens_to_string(): implement it, or leave CLASSIFY_TOKENS out of ModelInfo.capabilities",
        ),
    ],
)
async def test_a_plugin_that_claims_what_it_cannot_serve_fails_at_load(
    served: tuple[str, str], model: str, reason: str
) -> None:
    target, _ = served
    info = await _model(target, model)
    assert info.state == model_service_pb2.MODEL_STATE_FAILED
    assert info.failure_reason == reason
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _classify(target, model)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == f"model {model!r} failed to load: {reason}"
    assert (await _model(target, "nli")).state == model_service_pb2.MODEL_STATE_READY
