"""The access log: one structured line per call, and the request id that ties the caller, the
log and error messages together."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bertserve_client.v1 import (
    encoder_service_pb2,
    encoder_service_pb2_grpc,
    heads_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
)

from raw_h2 import unary_call
from served import Served


def _serving(config: Path) -> Iterator[Served]:
    """The server of config, once its model is ready; stopped after."""
    served = Served(config)
    served.wait_for("model 'bert' ready")
    yield served
    served.process.terminate()
    served.process.wait(30)


@pytest.fixture(scope="module")
def json_logging(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "tokens.yaml").write_text("- {name: app, token: an-access-log-token-0123}\n")
    config = tmp / "c.yaml"
    config.write_text(
        "server:\n  address: 127.0.0.1\n  port: 0\n  log_format: json\n"
        f"  auth: {{tokens_file: '{tmp / 'tokens.yaml'}'}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    yield from _serving(config)


def _access_lines(served: Served, request_id: str) -> list[dict[str, object]]:
    lines = served.wait_for(f'"request_id": "{request_id}"')
    return [json.loads(line) for line in lines]


def test_a_call_writes_one_json_line_with_its_request_id(json_logging: Served) -> None:
    served = json_logging
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        request = encoder_service_pb2.EmbedRequest(model="bert", inputs=["one text", "and another"])
        metadata = (("authorization", "Bearer an-access-log-token-0123"), ("x-request-id", "req-abc-123"))
        reply, call = stub.Embed.with_call(request, metadata=metadata)
    # A unary answer goes out as one batch (headers, message, trailers): the id is in the trailers.
    assert ("x-request-id", "req-abc-123") in call.trailing_metadata()
    assert ("x-request-id", "req-abc-123") not in call.initial_metadata()
    [line] = _access_lines(served, "req-abc-123")
    assert line["logger"] == "bertserve.access" and line["level"] == "INFO"
    assert {k: line[k] for k in ("rpc", "model", "code", "inputs", "tokens", "token_name", "request_id")} == {
        "rpc": "Embed",
        "model": "bert",
        "code": "OK",
        "inputs": 2,
        "tokens": reply.usage.tokens,
        "token_name": "app",
        "request_id": "req-abc-123",
    }
    assert float(line["queue_ms"]) >= 0 and float(line["inference_ms"]) > 0  # type: ignore[arg-type]
    assert float(line["ms"]) >= float(line["inference_ms"])  # type: ignore[arg-type]
    assert str(line["peer"]).startswith("ipv4:127.0.0.1:")


def test_a_refused_call_is_logged_and_an_id_is_made_up_when_none_is_sent(json_logging: Served) -> None:
    served = json_logging
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Embed(encoder_service_pb2.EmbedRequest(model="bert", inputs=["no token"]))
    err: grpc.Call = info.value  # type: ignore[assignment]
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    # An error goes out as trailers alone (so that a retry policy may try it again): the id is there.
    assert not err.initial_metadata()
    [request_id] = [v for k, v in err.trailing_metadata() if k == "x-request-id"]
    assert len(request_id) == 16
    [line] = _access_lines(served, request_id)
    assert (line["rpc"], line["code"], line["token_name"], line["inputs"]) == ("Embed", "UNAUTHENTICATED", "-", 1)


def test_every_rpc_is_logged_with_its_code(json_logging: Served) -> None:
    served = json_logging
    pb = encoder_service_pb2
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        auth = ("authorization", "Bearer an-access-log-token-0123")
        stub.Tokenize(
            pb.TokenizeRequest(model="bert", inputs=["a", "b", "c"]), metadata=(auth, ("x-request-id", "tok-1"))
        )
        with pytest.raises(grpc.RpcError):
            stub.Embed(pb.EmbedRequest(model="nope", inputs=["x"]), metadata=(auth, ("x-request-id", "emb-404")))
        items = [pb.EmbedStreamRequest(request=pb.EmbedRequest(model="bert", inputs=[f"item {i}"])) for i in range(3)]
        replies = list(stub.EmbedStream(iter(items), metadata=(auth, ("x-request-id", "stream-1"))))
    assert len(replies) == 3
    [tokenized] = _access_lines(served, "tok-1")
    assert (tokenized["rpc"], tokenized["code"], tokenized["inputs"]) == ("Tokenize", "OK", 3)
    [missing] = _access_lines(served, "emb-404")
    assert (missing["rpc"], missing["model"], missing["code"]) == ("Embed", "nope", "NOT_FOUND")
    [streamed] = _access_lines(served, "stream-1")
    assert (streamed["rpc"], streamed["model"], streamed["code"], streamed["inputs"]) == (
        "EmbedStream",
        "bert",
        "OK",
        3,
    )
    assert not served.wait_for("cannot write the access log line", count=0)


def test_a_scope_refusal_names_the_token(json_logging: Served) -> None:
    served = json_logging
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        metadata = (("authorization", "Bearer an-access-log-token-0123"), ("x-request-id", "scope-1"))
        with pytest.raises(grpc.RpcError) as info:
            stub.UnloadModel(model_service_pb2.UnloadModelRequest(name="bert"), metadata=metadata)
    err: grpc.Call = info.value  # type: ignore[assignment]
    assert (err.code(), err.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'app' may not call /bertserve.v1.ModelService/UnloadModel: it needs the admin scope",
    )
    [line] = _access_lines(served, "scope-1")
    assert (line["rpc"], line["model"], line["code"], line["token_name"]) == (
        "UnloadModel",
        "bert",
        "PERMISSION_DENIED",
        "app",
    )


def test_metadata_that_is_not_utf8_is_served_and_logged_once_without_a_traceback(json_logging: Served) -> None:
    served = json_logging
    request = encoder_service_pb2.EmbedRequest(model="bert", inputs=["junk"]).SerializeToString()
    method = "/bertserve.v1.EncoderService/Embed"
    for i in range(5):
        metadata = [
            (b"authorization", b"Bearer an-access-log-token-0123"),
            (b"x-junk", b"\xff\xfe\x80"),
            (b"user-agent", b"agent \xc3\x28"),
            (b"x-request-id", f"junk-{i}".encode()),
        ]
        trailers = unary_call("127.0.0.1", served.port, method, request, metadata)
        assert trailers[b"grpc-status"] == b"0", trailers
    # A token that is not UTF-8 is an unknown token, not a fault.
    metadata = [(b"authorization", b"Bearer \xff\xfe"), (b"x-request-id", b"junk-token")]
    trailers = unary_call("127.0.0.1", served.port, method, request, metadata)
    refusal = (trailers[b"grpc-status"], trailers[b"grpc-message"])
    assert refusal == (b"16", b"the token is not known to this server"), trailers
    for i in range(5):
        [line] = _access_lines(served, f"junk-{i}")
        assert line["code"] == "OK"
    [warning] = served.wait_for("a call sent metadata that is not UTF-8")
    assert json.loads(warning)["level"] == "WARNING"
    log = "".join(served.log)
    assert "Traceback" not in log and "Invalid encoding" not in log, log


@pytest.fixture(scope="module")
def text_logging(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("access-text") / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    yield from _serving(config)


def test_a_callers_model_name_cannot_forge_a_line_or_swell_one(text_logging: Served) -> None:
    served = text_logging
    forged = "nope\n2026-01-01 00:00:00,000 INFO bertserve.access: rpc=LoadModel model=x code=OK token_name=admin"
    pb = encoder_service_pb2
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        for model, request_id in ((forged, "forged-1"), ("x" * 100_000, "long-1"), ("a b\x1b[2J", "spaced-1")):
            with pytest.raises(grpc.RpcError) as info:
                stub.Embed(pb.EmbedRequest(model=model, inputs=["x"]), metadata=(("x-request-id", request_id),))
            assert info.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        request = heads_pb2.SimilarityRequest(model="bert", source_sentence="a", sentences=["b", "c", "d"])
        stub.Similarity(request, metadata=(("x-request-id", "similar-1"),))
    [line] = served.wait_for("request_id=forged-1")
    assert f" model={forged!a} code=NOT_FOUND " in line
    assert not [each for each in served.log if each.startswith("2026-01-01")]
    [line] = served.wait_for("request_id=long-1")
    assert f" model={'x' * 128}... code=NOT_FOUND " in line and len(line) < 500
    [line] = served.wait_for("request_id=spaced-1")
    assert " model='a b\\x1b[2J' code=NOT_FOUND " in line
    [line] = served.wait_for("request_id=similar-1")
    assert " rpc=Similarity model=bert code=OK inputs=3 " in line


def test_calls_that_end_together_are_each_logged_once_stamped_with_their_end_even_as_the_server_stops(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Lines are logged a loop turn at a time: none is lost or repeated when many calls end in one
    turn and the server stops straight after, and each line's time is its call's end."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, log_format: json, drain_delay_s: 0}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    served = Served(config)
    try:
        served.wait_for("model 'bert' ready")
        ended: dict[str, float] = {}
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
            request = encoder_service_pb2.EmbedRequest(model="bert", inputs=["a few words"])
            started = time.time()
            calls = {
                f"together-{i}": stub.Embed.future(request, metadata=(("x-request-id", f"together-{i}"),), timeout=60)
                for i in range(48)
            }
            for request_id, call in calls.items():
                call.result()
                ended[request_id] = time.time()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(60) == 0
        served.wait_for("bertserve stopped")
    finally:
        if served.process.poll() is None:
            served.process.kill()
    lines = [json.loads(line) for line in served.log if '"request_id": "together-' in line]
    assert sorted(line["request_id"] for line in lines) == sorted(ended)
    for line in lines:
        assert line["rpc"] == "Embed" and line["code"] == "OK"
        stamp = str(line["time"])
        at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000
        # asctime counts whole milliseconds: a stamp may read up to 1 ms before the instant it names
        assert started - 0.002 <= at <= ended[str(line["request_id"])] + 0.001, (stamp, started)
