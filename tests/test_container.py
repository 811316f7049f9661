"""The image for real: built from deploy/Dockerfile, run with podman, called over gRPC from here.

Two containers of the one image: as `docker run` would start it (the packaged configuration), and
as the Kubernetes Deployment runs it (its config.yaml at BERTSERVE_CONFIG, a read-only root with
only /tmp and the cache volume writable, no capabilities, the server as PID 1 with no init).

Slow (a cold build takes minutes): it runs only with BERTSERVE_CONTAINER_TESTS=1, which .ci/run
sets, and where podman is installed. The containers share the host's network, so each server
binds its own loopback address and a free port.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from containers import IMAGE, ROOT, Dockerfile, Podman, store_dir
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve.app.config import ServerConfig, load_config
from bertserve_client import Client

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        os.environ.get("BERTSERVE_CONTAINER_TESTS") != "1",
        reason="builds and runs the image: set BERTSERVE_CONTAINER_TESTS=1 (.ci/run does)",
    ),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (.ci/run installs it as root)"),
    pytest.mark.timeout(1800),  # the first test builds: base image, torch and the dependencies
]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BASE = ROOT / "deploy" / "kustomize" / "base"
PAIR = ["A man is playing a guitar.", "Someone plays an instrument."]


class Container:
    """A running container of the image, serving gRPC at target."""

    def __init__(self, podman: Podman, cid: str, target: str, config: ServerConfig) -> None:
        self.podman, self.id, self.target, self.config = podman, cid, target, config

    def logs(self) -> str:
        result = self.podman("logs", self.id, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        return self.podman("inspect", "--format", "{{.State.Running}}", self.id).stdout.strip() == "true"

    def health(self, service: str = "") -> Any:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status

    def wait_serving(self, service: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.health(service) == SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            assert self.running(), f"the container stopped:\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"{service!r} not SERVING within {timeout}s:\n{self.logs()}")

    def stop_and_wait(self) -> tuple[int, float]:
        """SIGTERM, as Kubernetes sends it; the exit status and the seconds it took."""
        start = time.monotonic()
        self.podman("kill", "--signal", "TERM", self.id)
        limit = self.config.drain_delay_s + self.config.grace_period_s + 30
        status = int(self.podman("wait", self.id, timeout=limit).stdout.strip())
        return status, time.monotonic() - start


def _loopback() -> tuple[str, int]:
    """A loopback address of its own and a free port on it: the container shares the host's network."""
    address = f"127.0.0.{random.randint(2, 254)}"
    with socket.socket() as s:
        s.bind((address, 0))
        return address, s.getsockname()[1]


@pytest.fixture(scope="module")
def podman() -> Podman:
    podman = Podman(store_dir())
    podman.ensure_base_image()
    podman.build()
    return podman


def _run(podman: Podman, *args: str, env: dict[str, str]) -> str:
    env_args = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
    return podman("run", "-d", "--network", "host", *env_args, *args, IMAGE).stdout.strip()


@pytest.fixture(scope="module")
def plain(podman: Podman) -> Iterator[Container]:
    """`docker run IMAGE`: the packaged configuration, only the address and port set."""
    address, port = _loopback()
    cid = _run(podman, env={"BERTSERVE_ADDRESS": address, "BERTSERVE_PORT": str(port)})
    try:
        yield Container(podman, cid, f"{address}:{port}", load_config(environ={}))
    finally:
        podman("rm", "--force", "--volumes", cid, check=False)


@pytest.fixture(scope="module")
def pod(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image as the Deployment runs it, with the ConfigMap's config.yaml where BERTSERVE_CONFIG points."""
    [container] = yaml.safe_load((BASE / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    config_path = next(e["value"] for e in container["env"] if e["name"] == "BERTSERVE_CONFIG")
    address, port = _loopback()
    _, metrics_port = _loopback()
    raw = yaml.safe_load((BASE / "config.yaml").read_text())
    raw["server"]["metrics_port"] = metrics_port  # no env variable for it; the rest is the file as it is
    config = tmp_path_factory.mktemp("pod") / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    config.chmod(0o644)
    cid = _run(
        podman,
        "--read-only",
        "--read-only-tmpfs=false",  # only what the pod mounts is writable: /tmp and the cache VOLUME
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        f"{config}:{config_path}:ro",
        env={"BERTSERVE_CONFIG": config_path, "BERTSERVE_ADDRESS": address, "BERTSERVE_PORT": str(port)},
    )
    try:
        settings = load_config(config, environ={"BERTSERVE_ADDRESS": address, "BERTSERVE_PORT": str(port)})
        yield Container(podman, cid, f"{address}:{port}", settings)
    finally:
        podman("rm", "--force", "--volumes", cid, check=False)


def _embed_pair(target: str, model: str, minilm_dir: Path) -> None:
    """all-MiniLM-L6-v2's vectors: its width, unit length, and the pair's known similarity."""
    hidden = json.loads((minilm_dir / "config.json").read_text())["hidden_size"]
    with Client(target, timeout=60) as client:
        result = client.embed(PAIR, normalize=True)
    assert result.model == model
    assert result.embeddings.shape == (2, hidden)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-4)
    assert 0.6 < float(result.embeddings[0] @ result.embeddings[1]) < 0.75  # 0.667 in float32


def test_the_images_default_model_serves_embed_offline(plain: Container, minilm_dir: Path) -> None:
    plain.wait_serving(plain.config.default_model)
    assert plain.health("") == SERVING
    _embed_pair(plain.target, plain.config.default_model, minilm_dir)


def test_the_server_runs_as_the_images_non_root_user(plain: Container) -> None:
    plain.wait_serving(plain.config.default_model)
    uid, gid = Dockerfile().user
    assert uid != 0
    # The container's PID 1, seen from the host: the server itself (no init, as in a pod).
    pid = plain.podman("inspect", "--format", "{{.State.Pid}}", plain.id).stdout.strip()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert any(arg.endswith(b"bertserve") for arg in cmdline) and b"serve" in cmdline, cmdline
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert {int(u) for u in status["Uid"].split()} == {uid}
    assert {int(g) for g in status["Gid"].split()} == {gid}


def test_the_images_healthcheck_passes(plain: Container) -> None:
    plain.wait_serving(plain.config.default_model)
    result = plain.podman("healthcheck", "run", plain.id, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sigterm_stops_the_image_within_its_grace_period(plain: Container) -> None:
    plain.wait_serving(plain.config.default_model)
    status, took = plain.stop_and_wait()
    assert status == 0, plain.logs()
    assert took < plain.config.drain_delay_s + plain.config.grace_period_s, plain.logs()
    assert "bertserve stopped" in plain.logs()


def test_the_pod_serves_its_config_under_a_read_only_root(pod: Container, minilm_dir: Path) -> None:
    pod.wait_serving(pod.config.default_model)  # the readiness probe's service
    caps = pod.podman("exec", pod.id, "grep", "CapEff", "/proc/1/status").stdout.split()[-1]
    assert int(caps, 16) == 0
    _embed_pair(pod.target, pod.config.default_model, minilm_dir)
    # The gauge the queue-depth HPA example scales on, at the metrics port.
    host = pod.target.rsplit(":", 1)[0]
    with urllib.request.urlopen(f"http://{host}:{pod.config.metrics_port}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    assert f'bertserve_queue_sequences{{model="{pod.config.default_model}"}}' in metrics


def test_the_pod_drains_on_sigterm(pod: Container, minilm_dir: Path) -> None:
    """NOT_SERVING at once, new calls still answered for drain_delay_s, then an exit within the grace."""
    model = pod.config.default_model
    pod.wait_serving(model)
    assert pod.config.drain_delay_s >= 2, "the deploy config's drain_delay_s is too short to observe"
    start = time.monotonic()
    pod.podman("kill", "--signal", "TERM", pod.id)
    while pod.health(model) != NOT_SERVING:
        assert time.monotonic() - start < 2, "still SERVING 2s after SIGTERM"
        time.sleep(0.05)
    _embed_pair(pod.target, model, minilm_dir)  # a new connection, within the drain delay
    assert time.monotonic() - start < pod.config.drain_delay_s
    limit = pod.config.drain_delay_s + pod.config.grace_period_s
    status = int(pod.podman("wait", pod.id, timeout=limit + 30).stdout.strip())
    took = time.monotonic() - start
    assert status == 0, pod.logs()
    assert pod.config.drain_delay_s <= took < limit, (took, pod.logs())
