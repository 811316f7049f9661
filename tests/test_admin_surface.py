"""The admin RPCs are closed unless the operator opens them, tested from a peer that is not on
loopback: a client in a network namespace of its own, reaching the server over a veth pair.

Why that peer counts as remote: the namespace has its own network stack, so its calls arrive on
the veth interface from 198.18.0.2 (a benchmarking range, RFC 2544), not from 127.0.0.0/8 or ::1,
exactly as a call from another machine on the network would. The server binds 0.0.0.0, as the
default configuration does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from bertserve.app.server import BertServer
from bertserve_client.v1 import model_service_pb2, model_service_pb2_grpc

from conftest import NO_RETRIES, start_server

HOST_ADDRESS, PEER_ADDRESS = "198.18.0.1", "198.18.0.2"
ADMIN_TOKEN = "an-admin-token-0123456789"
APP_TOKEN = "an-inference-token-0123456789"

# The client run inside the namespace: one call, its outcome printed as JSON.
CLIENT = """
import json, sys
import grpc
from bertserve_client.v1 import model_service_pb2, model_service_pb2_grpc

target, rpc, entry, token = sys.argv[1:5]
with grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)]) as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = (
        model_service_pb2.LoadModelRequest(entry=entry) if rpc == "LoadModel"
        else model_service_pb2.UnloadModelRequest(name=entry) if rpc == "UnloadModel"
        else model_service_pb2.ListModelsRequest()
    )
    metadata = (("authorization", "Bearer " + token),) if token else ()
    try:
        getattr(stub, rpc)(request, metadata=metadata, timeout=60)
        print(json.dumps({"code": "OK", "details": ""}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))
"""


class Namespace:
    """A network namespace joined to this one by a veth pair: 198.18.0.2 there, 198.18.0.1 here."""

    def __init__(self, tmp: Path) -> None:
        tag = str(os.getpid() % 100000)
        self.name, self.host_link, self.peer_link = f"bertserve-admin-{tag}", f"bsa{tag}h", f"bsa{tag}n"
        self.script = tmp / "client.py"
        self.script.write_text(CLIENT)

    def create(self) -> None:
        ip = ["ip"]
        _run([*ip, "netns", "add", self.name])
        _run([*ip, "link", "add", self.host_link, "type", "veth", "peer", "name", self.peer_link, "netns", self.name])
        _run([*ip, "addr", "add", f"{HOST_ADDRESS}/30", "dev", self.host_link])
        _run([*ip, "link", "set", self.host_link, "up"])
        inside = [*ip, "netns", "exec", self.name, "ip"]
        _run([*inside, "addr", "add", f"{PEER_ADDRESS}/30", "dev", self.peer_link])
        _run([*inside, "link", "set", self.peer_link, "up"])
        _run([*inside, "link", "set", "lo", "up"])

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    async def call(self, port: int, rpc: str, entry: str = "", token: str = "") -> tuple[str, str]:
        """One ModelService call from inside the namespace: (its status code's name, its details)."""
        command = ["ip", "netns", "exec", self.name, sys.executable, str(self.script)]
        command += [f"{HOST_ADDRESS}:{port}", rpc, entry, token]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        return outcome["code"], outcome["details"]


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace for a non-loopback peer needs root and iproute2's ip")
    space = Namespace(tmp_path_factory.mktemp("netns"))
    try:
        space.create()
    except subprocess.CalledProcessError as e:
        space.remove()
        pytest.skip(f"cannot create a network namespace here: {' '.join(e.cmd)}: {e.stderr.strip()}")
    yield space
    space.remove()


def _config(tmp: Path, tiny: dict[str, Path], admin: str = "", tokens: bool = False) -> Path:
    server = ["server:", "  address: 0.0.0.0", "  port: 0"]
    if admin:
        server.append(f"  admin: {admin}")
    if tokens:
        path = tmp / "tokens.yaml"
        path.write_text(
            f"- {{name: operator, token: {ADMIN_TOKEN}, scopes: [admin]}}\n- {{name: app, token: {APP_TOKEN}}}\n"
        )
        server.append(f"  auth: {{tokens_file: '{path}'}}")
    models = [f"  - {{name: bert, plugin: bert, source: '{tiny['bert']}', device: cpu}}"]
    config = tmp / "c.yaml"
    config.write_text("\n".join([*server, "models:", *models]) + "\n")
    return config


def _entry(tiny: dict[str, Path], name: str) -> str:
    return f"{{name: {name}, plugin: bert, source: '{tiny['bert']}', device: cpu}}"


@pytest.fixture
async def open_server(tiny_models: dict[str, Path], tmp_path: Path) -> AsyncIterator[BertServer]:
    """The default: no tokens, no admin settings."""
    server = await start_server(_config(tmp_path, tiny_models))
    yield server
    await server.stop(grace=1)


def _refusal(rpc: str) -> str:
    return (
        f"{rpc} is an admin call, and this server has no tokens, so it answers admin calls from this machine only "
        f"(loopback), not from ipv4:{PEER_ADDRESS}:"
    )


async def test_without_tokens_admin_calls_from_another_host_are_refused(
    namespace: Namespace, open_server: BertServer, tiny_models: dict[str, Path]
) -> None:
    code, details = await namespace.call(open_server.port, "LoadModel", _entry(tiny_models, "remote"))
    assert code == "PERMISSION_DENIED"
    assert details.startswith(_refusal("LoadModel")), details
    assert details.endswith(
        ". To call it from elsewhere, configure tokens with the admin scope (server.auth.tokens_file or "
        "BERTSERVE_TOKENS), or set server.admin.allow_remote_without_auth: true to open admin calls to every peer "
        "without auth"
    ), details
    assert "remote" not in open_server.router, "nothing was loaded"
    code, details = await namespace.call(open_server.port, "UnloadModel", "bert")
    assert (code, details.startswith(_refusal("UnloadModel"))) == ("PERMISSION_DENIED", True), details
    assert "bert" in open_server.router
    # Inference and listing stay open to every peer.
    assert await namespace.call(open_server.port, "ListModels") == ("OK", "")


async def test_without_tokens_admin_calls_from_loopback_are_answered(
    open_server: BertServer, tiny_models: dict[str, Path]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{open_server.port}", options=NO_RETRIES) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        reply = await stub.LoadModel(model_service_pb2.LoadModelRequest(entry=_entry(tiny_models, "local")))
        assert reply.model.name == "local" and reply.model.state == model_service_pb2.MODEL_STATE_READY
        await stub.UnloadModel(model_service_pb2.UnloadModelRequest(name="local"))


async def test_an_admin_token_is_answered_from_anywhere(
    namespace: Namespace, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    server = await start_server(_config(tmp_path, tiny_models, tokens=True))
    try:
        port = server.port
        assert await namespace.call(port, "LoadModel", _entry(tiny_models, "remote"), ADMIN_TOKEN) == ("OK", "")
        assert "remote" in server.router
        code, details = await namespace.call(port, "UnloadModel", "remote", APP_TOKEN)
        assert (code, details) == (
            "PERMISSION_DENIED",
            "token 'app' may not call /bertserve.v1.ModelService/UnloadModel: it needs the admin scope",
        )
        code, details = await namespace.call(port, "UnloadModel", "remote")
        assert code == "UNAUTHENTICATED", details
        assert await namespace.call(port, "UnloadModel", "remote", ADMIN_TOKEN) == ("OK", "")
    finally:
        await server.stop(grace=1)


async def test_the_operator_can_open_admin_calls_without_tokens(
    namespace: Namespace, tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(_config(tmp_path, tiny_models, admin="{allow_remote_without_auth: true}"))
    try:
        assert (
            "admin calls (LoadModel, UnloadModel, ReloadModel) are open to every peer without auth "
            "(server.admin.allow_remote_without_auth): anyone who reaches 0.0.0.0:0 can change the models"
        ) in caplog.text
        assert await namespace.call(server.port, "LoadModel", _entry(tiny_models, "remote")) == ("OK", "")
    finally:
        await server.stop(grace=1)
