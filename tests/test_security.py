"""TLS, mutual TLS, certificate rotation, bearer tokens and their scopes, through real servers on
loopback, with certificates made at test time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from certs import Pki, make_pki, subject_of
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve.errors import ConfigError
from bertserve_client import AsyncClient, BertserveError, Client, tls_credentials
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

from conftest import start_server
from served import Served

INFERENCE_TOKEN = "inference-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
BERT_ONLY_TOKEN = "bert-only-token-0123456789"
BERT_ADMIN_TOKEN = "bert-admin-token-0123456789"
TOKENS = f"""
- {{name: app, token: {INFERENCE_TOKEN}}}
- {{name: operator, token: {ADMIN_TOKEN}, scopes: [admin]}}
- {{name: bert-caller, token: {BERT_ONLY_TOKEN}, models: [bert]}}
- {{name: bert-operator, token: {BERT_ADMIN_TOKEN}, scopes: [admin], models: [bert]}}
"""
ADMIN_RPCS = ("LoadModel", "UnloadModel", "ReloadModel")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def secured(
    pki: Pki, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BertServer]:
    """TLS (no client certificates asked) and token auth, two models."""
    tmp = tmp_path_factory.mktemp("secured")
    (tmp / "tokens.yaml").write_text(TOKENS)
    config = tmp / "c.yaml"
    config.write_text(
        "server:\n  address: 127.0.0.1\n  port: 0\n"
        f"  tls: {{cert_file: '{pki.server.cert}', key_file: '{pki.server.key}'}}\n"
        f"  auth: {{tokens_file: '{tmp / 'tokens.yaml'}'}}\n"
        "models:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
        f"  - {{name: roberta, plugin: roberta, source: '{tiny_models['roberta']}'}}\n"
    )
    server = await start_server(config)
    yield server
    await server.stop(grace=1)


def _address(server: BertServer) -> str:
    return f"127.0.0.1:{server.port}"


def _tls(pki: Pki, *, client_cert: bool = False) -> grpc.ChannelCredentials:
    if client_cert:
        return tls_credentials(pki.ca, pki.client.cert, pki.client.key)
    return tls_credentials(pki.ca)


async def _error(call: object) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call  # type: ignore[misc]
    return info.value


# -- TLS -------------------------------------------------------------------------------------------


async def test_a_tls_call_succeeds(secured: BertServer, pki: Pki) -> None:
    async with AsyncClient(_address(secured), credentials=_tls(pki), token=INFERENCE_TOKEN) as client:
        result = await client.embed("over TLS", model="bert")
    assert result.embeddings.shape[0] == 1


async def test_a_plaintext_call_to_a_tls_port_fails(secured: BertServer) -> None:
    async with AsyncClient(_address(secured), token=INFERENCE_TOKEN, timeout=5) as client:
        err = await _error(client.embed("in the clear", model="bert"))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "Socket closed" in err.message or "failed to connect" in err.message


async def test_a_client_that_does_not_trust_the_ca_is_refused(secured: BertServer, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path / "other", ca_name="another CA")
    async with AsyncClient(_address(secured), credentials=_tls(stranger), token=INFERENCE_TOKEN, timeout=5) as client:
        err = await _error(client.embed("who are you", model="bert"))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "handshake" in err.message.lower() or "failed to connect" in err.message


async def test_mutual_tls_requires_a_client_certificate(pki: Pki, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "server:\n  address: 127.0.0.1\n  port: 0\n"
        f"  tls: {{cert_file: '{pki.server.cert}', key_file: '{pki.server.key}', client_ca_file: '{pki.ca}'}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    server = await start_server(config)
    try:
        async with AsyncClient(_address(server), credentials=_tls(pki), timeout=5) as client:
            err = await _error(client.embed("no certificate", model="bert"))
        assert err.code is grpc.StatusCode.UNAVAILABLE
        async with AsyncClient(_address(server), credentials=_tls(pki, client_cert=True)) as client:
            assert (await client.embed("with a certificate", model="bert")).embeddings.shape[0] == 1
    finally:
        await server.stop(grace=1)


@contextlib.contextmanager
def _served_from_live_files(
    pki: Pki, tiny_models: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[Served, Path, Path]]:
    """A TLS server, ready, whose certificate and key are copies in files a test may replace."""
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, tls: {{cert_file: '{cert}', key_file: '{key}'}}}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    served = Served(config)
    try:
        served.wait_for("model 'bert' ready")
        yield served, cert, key
    finally:
        served.process.terminate()
        served.process.wait(30)


def test_a_certificate_rotated_by_sighup_is_served_to_new_connections(
    pki: Pki, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    with _served_from_live_files(pki, tiny_models, tmp_path) as (served, cert, key):
        live = cert.parent
        address = f"127.0.0.1:{served.port}"
        with Client(address, credentials=_tls(pki), timeout=10) as old:
            old.embed("before the rotation", model="bert")
            rotated = make_pki(tmp_path / "rotated", ca_name="rotated CA", server_name="rotated server")
            # Replace both files at once, as a secret update does.
            shutil.copy(rotated.server.cert, live / "next.pem")
            shutil.copy(rotated.server.key, live / "next.key")
            (live / "next.pem").replace(cert)
            (live / "next.key").replace(key)
            served.process.send_signal(signal.SIGHUP)
            with Client(address, credentials=_tls(rotated), timeout=10) as new:
                assert new.embed("after the rotation", model="bert").embeddings.shape[0] == 1
            # The connection opened before the rotation goes on, on its old certificate.
            assert old.embed("still open", model="bert").embeddings.shape[0] == 1
        with Client(address, credentials=_tls(pki), timeout=5) as stale:
            with pytest.raises(BertserveError) as info:
                stale.embed("trusting the old CA only", model="bert")
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
        served.wait_for("TLS certificates re-read from")
        assert subject_of(cert.read_bytes()) == "rotated server"


def test_tls_files_that_cannot_serve_fail_the_start_naming_the_file(pki: Pki, tmp_path: Path) -> None:
    """gRPC would say only that it could not bind; the configuration says which file is wrong."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(pki.server.key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    cases = [
        (garbage, pki.server.key, None, f"cert_file '{garbage}' holds no PEM certificate"),
        (pki.server.cert, garbage, None, f"key_file '{garbage}' holds no unencrypted PEM private key"),
        (pki.server.cert, encrypted, None, f"key_file '{encrypted}' holds no unencrypted PEM private key"),
        (
            pki.server.cert,
            pki.client.key,
            None,
            f"key_file '{pki.client.key}' is not the key of the certificate in '{pki.server.cert}'",
        ),
        (pki.server.cert, pki.server.key, garbage, f"client_ca_file '{garbage}' holds no PEM certificate"),
    ]
    for cert, key, ca, problem in cases:
        config = tmp_path / "c.yaml"
        ca_line = f", client_ca_file: '{ca}'" if ca else ""
        config.write_text(
            f"server: {{port: 0, tls: {{cert_file: '{cert}', key_file: '{key}'{ca_line}}}}}\n"
            "models:\n  - {name: m, plugin: bert, source: ./m}\n"
        )
        with pytest.raises(ConfigError) as info:
            load_config(config)
        assert str(info.value) == f"server.tls: {problem}"
    run = subprocess.run(
        [sys.executable, "-m", "bertserve.app.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().endswith(f"server.tls: client_ca_file '{garbage}' holds no PEM certificate")


def test_a_rotation_to_files_that_cannot_serve_is_refused_and_said(
    pki: Pki, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    with _served_from_live_files(pki, tiny_models, tmp_path) as (served, cert, key):
        shutil.copy(pki.client.key, cert.parent / "next.key")  # a key that is not the certificate's
        (cert.parent / "next.key").replace(key)
        served.process.send_signal(signal.SIGHUP)
        with Client(f"127.0.0.1:{served.port}", credentials=_tls(pki), timeout=10) as client:
            assert client.embed("served on the certificate in use", model="bert").embeddings.shape[0] == 1
        [refused] = served.wait_for("the new TLS files are refused")
        assert refused.rstrip().endswith(
            f"the new TLS files are refused: key_file '{key}' is not the key of the certificate in '{cert}'; the "
            "certificates in use stay"
        )
        assert not [line for line in served.log if "TLS certificates re-read from" in line]


def test_plaintext_off_loopback_and_reflection_protected_without_tokens_are_warned_about(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 0.0.0.0, port: 0, auth: {protect_reflection: true}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    served = Served(config)
    try:
        [line] = served.wait_for("serving plaintext on")
        assert "WARNING" in line and "0.0.0.0, which is not a loopback address: set server.tls" in line
        [line] = served.wait_for("protect_reflection is set")
        assert line.rstrip().endswith(
            "WARNING bertserve.app.server: server.auth.protect_reflection is set, but no tokens are: reflection "
            "stays open, as every call is (set server.auth.tokens_file or BERTSERVE_TOKENS)"
        )
    finally:
        served.process.terminate()
        served.process.wait(30)


# -- tokens and scopes -----------------------------------------------------------------------------


def _calls(channel: grpc.aio.Channel) -> dict[str, object]:
    """Every protected RPC, as a coroutine factory taking call metadata; each names model bert."""
    encoder = encoder_service_pb2_grpc.EncoderServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    pb = encoder_service_pb2

    async def stream(metadata: tuple[tuple[str, str], ...]) -> object:
        items = [pb.EmbedStreamRequest(request=pb.EmbedRequest(model="bert", inputs=["streamed"]))]
        return [r async for r in encoder.EmbedStream(iter(items), metadata=metadata)]

    return {
        "Embed": lambda md: encoder.Embed(pb.EmbedRequest(model="bert", inputs=["a text"]), metadata=md),
        "Tokenize": lambda md: encoder.Tokenize(pb.TokenizeRequest(model="bert", inputs=["a text"]), metadata=md),
        "Answer": lambda md: encoder.Answer(
            pb.AnswerRequest(model="bert", questions=[pb.Question(question="q?", context="c.")]), metadata=md
        ),
        "EmbedStream": stream,
        "ListModels": lambda md: models.ListModels(model_service_pb2.ListModelsRequest(), metadata=md),
        "GetModel": lambda md: models.GetModel(model_service_pb2.GetModelRequest(name="bert"), metadata=md),
        # Past auth, these leave the server as it was: bert is taken, and it is the default model.
        "LoadModel": lambda md: models.LoadModel(
            model_service_pb2.LoadModelRequest(entry="{name: bert, plugin: bert}"), metadata=md
        ),
        "UnloadModel": lambda md: models.UnloadModel(model_service_pb2.UnloadModelRequest(name="bert"), metadata=md),
        "ReloadModel": lambda md: models.ReloadModel(model_service_pb2.ReloadModelRequest(name="bert"), metadata=md),
    }


async def _code_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
async def tls_channel(secured: BertServer, pki: Pki) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.secure_channel(_address(secured), _tls(pki)) as channel:
        yield channel


@pytest.mark.parametrize("rpc", ["Embed", "Tokenize", "Answer", "EmbedStream", "ListModels", "GetModel", *ADMIN_RPCS])
async def test_every_rpc_checks_its_token(tls_channel: grpc.aio.Channel, rpc: str) -> None:
    call = _calls(tls_channel)[rpc]
    assert await _code_of(call(())) == (  # type: ignore[operator]
        grpc.StatusCode.UNAUTHENTICATED,
        "this server requires a token: send 'authorization: Bearer <token>'",
    )
    assert await _code_of(call(_bearer("not-a-known-token-at-all"))) == (  # type: ignore[operator]
        grpc.StatusCode.UNAUTHENTICATED,
        "the token is not known to this server",
    )
    assert await _code_of(call((("authorization", INFERENCE_TOKEN),))) == (  # type: ignore[operator]
        grpc.StatusCode.UNAUTHENTICATED,
        "the authorization metadata is not 'Bearer <token>'",
    )
    service = "ModelService" if rpc in ("ListModels", "GetModel", *ADMIN_RPCS) else "EncoderService"
    method = f"/bertserve.v1.{service}/{rpc}"
    admin = rpc in ADMIN_RPCS
    wrong, right = (INFERENCE_TOKEN, ADMIN_TOKEN) if admin else (ADMIN_TOKEN, INFERENCE_TOKEN)
    who, scope = ("app", "admin") if admin else ("operator", "inference")
    assert await _code_of(call(_bearer(wrong))) == (  # type: ignore[operator]
        grpc.StatusCode.PERMISSION_DENIED,
        f"token '{who}' may not call {method}: it needs the {scope} scope",
    )
    code, message = await _code_of(call(_bearer(right)))  # type: ignore[operator]
    # Past auth, each gets the server's own answer: the tiny BERT has no QA head, bert is taken, and
    # the default model stays.
    expected = {
        "Answer": grpc.StatusCode.UNIMPLEMENTED,
        "LoadModel": grpc.StatusCode.ALREADY_EXISTS,
        "UnloadModel": grpc.StatusCode.FAILED_PRECONDITION,
    }.get(rpc, grpc.StatusCode.OK)
    assert code is expected, message


async def test_a_token_limited_to_some_models_is_refused_the_others(tls_channel: grpc.aio.Channel) -> None:
    encoder = encoder_service_pb2_grpc.EncoderServiceStub(tls_channel)
    md = _bearer(BERT_ONLY_TOKEN)
    pb = encoder_service_pb2
    assert (await encoder.Embed(pb.EmbedRequest(model="bert", inputs=["mine"]), metadata=md)).model == "bert"
    assert (await encoder.Embed(pb.EmbedRequest(inputs=["the default is bert"]), metadata=md)).model == "bert"
    assert await _code_of(encoder.Embed(pb.EmbedRequest(model="roberta", inputs=["not mine"]), metadata=md)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'bert-caller' may not use model 'roberta'",
    )
    # In a stream, as any failing item, the refused one gets its own error and the stream goes on.
    streamed = ("bert", "roberta", "bert", "")
    items = [pb.EmbedStreamRequest(request=pb.EmbedRequest(model=m, inputs=["x"])) for m in streamed]
    replies = [r async for r in encoder.EmbedStream(iter(items), metadata=md)]
    assert [r.WhichOneof("result") for r in replies] == ["response", "error", "response", "response"]
    assert (replies[1].error.code, replies[1].error.message) == (
        grpc.StatusCode.PERMISSION_DENIED.value[0],
        "token 'bert-caller' may not use model 'roberta'",
    )
    assert [r.response.model for r in replies if r.HasField("response")] == ["bert", "bert", "bert"]
    models = model_service_pb2_grpc.ModelServiceStub(tls_channel)
    assert await _code_of(models.GetModel(model_service_pb2.GetModelRequest(name="roberta"), metadata=md)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'bert-caller' may not use model 'roberta'",
    )
    # ListModels shows a token the models it may use, as GetModel does, and all of them to the others.
    listed = await models.ListModels(model_service_pb2.ListModelsRequest(), metadata=md)
    assert [m.name for m in listed.models] == ["bert"]
    everything = await models.ListModels(model_service_pb2.ListModelsRequest(), metadata=_bearer(INFERENCE_TOKEN))
    assert {"bert", "roberta"} <= {m.name for m in everything.models}
    # An admin token limited to bert manages bert alone, including what LoadModel's entry names.
    md = _bearer(BERT_ADMIN_TOKEN)
    for shown, call in (
        ("roberta", models.UnloadModel(model_service_pb2.UnloadModelRequest(name="roberta"), metadata=md)),
        ("roberta", models.ReloadModel(model_service_pb2.ReloadModelRequest(name="roberta"), metadata=md)),
        (
            "roberta-2",
            models.LoadModel(
                model_service_pb2.LoadModelRequest(entry="{name: roberta-2, plugin: roberta}"), metadata=md
            ),
        ),
    ):
        assert await _code_of(call) == (
            grpc.StatusCode.PERMISSION_DENIED,
            f"token 'bert-operator' may not use model '{shown}'",
        )


async def test_health_and_reflection_stay_open(tls_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(tls_channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="bertserve.v1.EncoderService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = await _listed_services(tls_channel, "grpc.reflection.v1alpha.ServerReflection", ())
    assert "bertserve.v1.EncoderService" in services


async def _listed_services(channel: grpc.aio.Channel, service: str, metadata: tuple[tuple[str, str], ...]) -> set[str]:
    """ListServices through the reflection service of that name (v1 or v1alpha: the same wire format)."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [r async for r in call(iter([request]), metadata=metadata)]
    return {s.name for s in replies[0].list_services_response.service}


async def test_the_client_and_the_cli_send_the_token(secured: BertServer, pki: Pki, tmp_path: Path) -> None:
    async with AsyncClient(_address(secured), credentials=_tls(pki)) as anonymous:
        err = await _error(anonymous.embed("no token", model="bert"))
    assert err.code is grpc.StatusCode.UNAUTHENTICATED
    assert err.message == "this server requires a token: send 'authorization: Bearer <token>'"
    base = [sys.executable, "-m", "bertserve.app.cli", "tokenize", "--model", "bert", "a text"]
    base += ["--target", _address(secured), "--tls-ca", str(pki.ca)]
    ok = await asyncio.to_thread(
        subprocess.run, base, capture_output=True, text=True, env={**os.environ, "BERTSERVE_TOKEN": INFERENCE_TOKEN}
    )
    assert ok.returncode == 0, ok.stderr
    flagged = await asyncio.to_thread(
        subprocess.run, [*base, "--token", INFERENCE_TOKEN], capture_output=True, text=True
    )
    assert flagged.returncode == 0, flagged.stderr
    refused = await asyncio.to_thread(
        subprocess.run, [*base, "--token", "wrong-token-wrong-token"], capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "UNAUTHENTICATED" in refused.stderr and "the token is not known to this server" in refused.stderr


# -- reflection and version ------------------------------------------------------------------------


async def test_reflection_answers_as_v1_and_v1alpha(channel: grpc.aio.Channel) -> None:
    for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        services = await _listed_services(channel, service, ())
        assert {"bertserve.v1.EncoderService", "grpc.health.v1.Health", service} <= services
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    ask = reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")
    [reply] = [r async for r in call(iter([ask]))]
    assert reply.file_descriptor_response.file_descriptor_proto, "v1 describes itself"


async def test_protected_reflection_needs_a_token(pki: Pki, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, auth: {{tokens_file: '{tmp_path / 'tokens.yaml'}', "
        "protect_reflection: true}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    server = await start_server(config)
    try:
        async with grpc.aio.insecure_channel(_address(server)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _listed_services(channel, "grpc.reflection.v1.ServerReflection", ())
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            # Any known token will do, whatever its scopes.
            services = await _listed_services(channel, "grpc.reflection.v1.ServerReflection", _bearer(ADMIN_TOKEN))
            assert "bertserve.v1.EncoderService" in services
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                await health.Check(health_pb2.HealthCheckRequest())
            ).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(grace=1)


async def test_the_server_tells_its_version(channel: grpc.aio.Channel) -> None:
    from bertserve import __version__

    reply = await model_service_pb2_grpc.ModelServiceStub(channel).ListModels(model_service_pb2.ListModelsRequest())
    assert reply.server_version == __version__
    command = [sys.executable, "-m", "bertserve.app.cli", "--version"]
    shown = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.strip() == f"bertserve {__version__}"
