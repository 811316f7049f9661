"""Several processes on one port: ``server.processes`` (see bertserve.app.process_plan).

One Python process serves about a thousand calls a second at most: gRPC, tokenization and the
batcher share its GIL. With ``processes: N`` the ``serve`` command starts N processes that bind the
same port (SO_REUSEPORT); the kernel spreads incoming connections over them. Connections, not
calls, are spread: a client reaches several processes only over several connections (the Python
client's ``channels``).

By default those processes are front ends: they run the gRPC edge, tokenize and post-process,
and feed one engine process per device (the CPU, or one GPU) over zmq IPC (bertserve.app.engine).
An engine loads each of its models once,
batches the calls of every front end, and takes every core for its workers. With ``engine:
false`` they are N whole servers instead, each loading every model, the cores split between
their torch pools, and model management refused.

This process supervises: it restarts a front end or server that dies after it started, restarts
the engine when it dies or stops answering (a wedge), and passes SIGTERM and SIGINT on.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType
from typing import Any

from bertserve.app.config import ServerConfig
from bertserve.app.process_plan import ProcessPlan, engine_models, gpu_present

__all__ = ["serve_processes"]

log = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 120.0  # binding comes before models load, so this is imports and plugin discovery
_RESTART_DELAY_S = 1.0
_WATCH_INTERVAL_S = 0.5  # how often the engine is pinged
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def serve_processes(config: ServerConfig, plan: ProcessPlan, all_cores: int) -> int:
    """Run the plan's servers (or front ends of one engine) on one port until SIGTERM or SIGINT;
    the exit status. all_cores: the cores this process may use."""
    reserved = _reserve_port(config)  # held open, so the port stays ours while servers restart
    port = reserved.getsockname()[1]
    # Whole servers split the cores between their torch pools; front ends run no torch, and each
    # engine's workers take every core (a GPU's engine uses few of them).
    cores = 1 if plan.engine else max(1, all_cores // plan.processes)
    child_config = replace(config, port=port, processes=1, engine=False)
    context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or locks
    samples = _serve_metrics_of_all(config)
    runtime = tempfile.mkdtemp(prefix="bertserve-") if plan.engine else None  # mode 0700: this user's alone
    engines: list[_EngineWatch] = []
    if runtime is not None:
        groups = engine_models(config.models, gpu_present())
        for device, specs in groups.items():
            stem = f"{runtime}/engine-{device.replace(':', '-')}"
            default = config.default_model if config.default_model in {spec.name for spec in specs} else specs[0].name
            engine_config = replace(child_config, models=specs, default_model=default)
            label = "engine" if len(groups) == 1 else f"engine {device}"
            engines.append(_EngineWatch(context, engine_config, all_cores, stem, device, label))
    links = [(e.address, e.device) for e in engines]
    stopping = False
    children: list[tuple[BaseProcess, Event]] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second signal: no more waiting for the servers to drain
            log.warning("second %s: stopping the servers now", signal.Signals(signum).name)
            for process in [*(p for p, _ in children), *(e.process for e in engines if e.process)]:
                if process.is_alive():
                    process.kill()
            logging.shutdown()
            os._exit(128 + signum)
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)

    def reload_certificates(signum: int, frame: object) -> None:
        for process, _ in children:  # each serves the port's TLS on its own
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload_certificates)

    def start(index: int) -> tuple[BaseProcess, Event]:
        listening = context.Event()
        process = context.Process(
            target=_serve_one,
            args=(child_config, cores, index, plan.processes, listening, os.getpid(), links),
            name=f"bertserve-{index}",
        )
        process.start()
        return process, listening

    if engines:
        devices = ", ".join(e.device for e in engines)
        log.info("%s on %s (port %d); engines: %s", plan.describe(), child_config.bind, port, devices)
    else:
        log.info("%s on %s (port %d), %d cores each", plan.describe(), child_config.bind, port, cores)
    try:
        for engine in engines:
            if not engine.start(lambda: stopping) and not stopping:
                log.error("the %s did not start (exit status %s)", engine.label, engine.exitcode)
                return 1
        children.extend(start(i + 1) for i in range(plan.processes))
        for index, (process, listening) in enumerate(children, start=1):
            if not _started(process, listening, lambda: stopping) and not stopping:
                log.error("process %d did not start serving (exit status %s)", index, process.exitcode)
                return 1
        while not stopping:
            sentinels = [p.sentinel for p, _ in children] + [e.sentinel for e in engines]
            multiprocessing.connection.wait(sentinels, timeout=_WATCH_INTERVAL_S)
            for engine in engines:
                if not stopping:
                    engine.watch(lambda: stopping)
            for i, (process, _) in enumerate(children):
                if process.is_alive() or stopping:
                    continue
                log.error("process %d exited (exit status %s); restarting it", i + 1, process.exitcode)
                for engine in engines:  # its calls are nobody's: the engines drop them now
                    engine.front_end_gone(_front_end_identity(i + 1))
                _forget_samples_of(process)
                time.sleep(_RESTART_DELAY_S)
                children[i] = start(i + 1)
        return 0
    finally:
        for engine in engines:
            engine.drain()
        _stop_all([p for p, _ in children], config.grace_period_s + config.drain_delay_s)
        for engine in engines:
            engine.stop(config.grace_period_s)
        reserved.close()
        for directory in (samples, runtime):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


class _EngineWatch:
    """The engine process: started, pinged, and restarted when it dies or stops answering.

    Each watch() sends a ping and reads the answers to earlier ones. An engine that has not
    answered for engine_stall_timeout_s, or whose oldest pass in flight has run that long, is
    wedged: it is killed, which its front ends see at once (their calls in flight fail with
    UNAVAILABLE), and started again; the models it served (run-time changes included) load again,
    and the front ends follow.
    """

    def __init__(self, context: Any, config: ServerConfig, cores: int, stem: str, device: str, label: str) -> None:
        """stem: the run directory's path for this engine's socket and the models it keeps for a
        restart (bertserve.app.saved_models); label: how the log names it (and its lines' prefix):
        engine, or engine cuda:1 among several."""
        import zmq

        self._context = context
        self._config = config
        self._cores = cores
        self.address = f"ipc://{stem}"
        self._models_file = Path(f"{stem}.models")
        self.device = device
        self.label = label
        self.process: BaseProcess | None = None
        self._zmq = zmq.Context()
        self._socket = self._zmq.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, b"supervisor")
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._socket.connect(self.address)
        self._unanswered_since: float | None = None  # when the oldest ping not yet answered went out

    @property
    def sentinel(self) -> int:
        assert self.process is not None
        return self.process.sentinel

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode if self.process is not None else None

    def start(self, stopping: Callable[[], bool]) -> bool:
        ready = self._context.Event()
        self.process = self._context.Process(
            target=_serve_engine,
            args=(self._config, self._cores, self.address, ready, os.getpid(), self.label, self._models_file),
            name=self.label.replace(" ", "-"),
        )
        self.process.start()
        started = _started(self.process, ready, stopping)
        self._unanswered_since = None
        return started

    def watch(self, stopping: Callable[[], bool]) -> None:
        import zmq

        from bertserve.serving import engine_wire as wire
        from bertserve.serving.engine_socket import messages_in

        assert self.process is not None
        if not self.process.is_alive():
            log.error(
                "the %s exited (exit status %s); restarting it with the models it served",
                self.label,
                self.process.exitcode,
            )
            _forget_samples_of(self.process)
            time.sleep(_RESTART_DELAY_S)
            if not self.start(stopping) and not stopping():
                log.error("the %s did not start again (exit status %s)", self.label, self.exitcode)
            return
        now = time.monotonic()
        oldest_pass_s = 0.0
        while self._socket.poll(0):
            received = self._socket.recv_multipart()
            for frames in messages_in([memoryview(frame) for frame in received]):
                if frames[0] == wire.PONG:
                    self._unanswered_since = None
                    (oldest_pass_s,) = wire.decode_small(frames)
        limit = self._config.engine_stall_timeout_s
        silent = 0.0 if self._unanswered_since is None else now - self._unanswered_since
        if silent > limit or oldest_pass_s > limit:
            why = f"answered no ping for {silent:.1f}s" if silent > limit else f"ran one pass for {oldest_pass_s:.1f}s"
            log.error("the %s is wedged: it %s (engine_stall_timeout_s %gs); killing it", self.label, why, limit)
            self.process.kill()
            self.process.join(5)
            return
        try:
            self._socket.send_multipart([wire.PING], flags=zmq.NOBLOCK)
        except zmq.Again:  # not connected yet
            return
        if self._unanswered_since is None:
            self._unanswered_since = now

    def _tell(self, kind: bytes, *values: Any) -> bool:
        """Send the engine a message of its own kind, if it lives; whether it does."""
        import zmq

        from bertserve.serving import engine_wire as wire

        if self.process is None or not self.process.is_alive():
            return False
        with contextlib.suppress(zmq.ZMQError):
            self._socket.send_multipart(wire.encode_small(kind, *values) if values else [kind], flags=zmq.NOBLOCK)
        return True

    def front_end_gone(self, identity: str) -> None:
        """A front end died: the engine drops the calls it had queued for it, at once rather than
        when the restarted one says hello, and passes no longer compute answers no one reads."""
        from bertserve.serving import engine_wire as wire

        self._tell(wire.GONE, identity)

    def drain(self) -> None:
        """The server drains: the engine serves the calls in flight in the order they came."""
        from bertserve.serving import engine_wire as wire

        self._tell(wire.DRAIN)

    def stop(self, grace_period_s: float) -> None:
        """Once the front ends are gone: tell the engine to stop (it leaves SIGTERM sent to the
        whole group to this), and kill it if it has not within the grace period."""
        from bertserve.serving import engine_wire as wire

        if self.process is not None and self._tell(wire.STOP):
            self.process.join(grace_period_s + 5)
            if self.process.is_alive():
                log.warning("the %s did not stop within the grace period; killing it", self.label)
                self.process.kill()
                self.process.join()
        self._zmq.destroy(linger=0)


def _serve_metrics_of_all(config: ServerConfig) -> str | None:
    """With metrics_port set: a directory where every server process writes its samples (set
    before any starts: prometheus_client reads it at import), and one /metrics over all of them."""
    if config.metrics_port is None:
        return None
    directory = tempfile.mkdtemp(prefix="bertserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from bertserve.observability.metrics import serve_metrics

    serve_metrics(config.address, config.metrics_port)
    return directory


def _forget_samples_of(process: BaseProcess) -> None:
    """A dead process's live gauges (queue depth, model state) leave the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and process.pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]


def _started(process: BaseProcess, listening: Event, stopping: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and not stopping():
        if listening.wait(0.2):
            return True
        if not process.is_alive():
            return False
    return listening.is_set()


def _stop_all(processes: list[BaseProcess], grace_period_s: float) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_period_s + 5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("process %s did not stop within the grace period; killing it", process.name)
            process.kill()
            process.join()


def _reserve_port(config: ServerConfig) -> socket.socket:
    """A bound, never listening SO_REUSEPORT socket: it picks the port when config.port is 0."""
    family, kind, proto, _, address = socket.getaddrinfo(
        config.address, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reserved = socket.socket(family, kind, proto)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind(address)
    except OSError as e:
        reserved.close()
        raise OSError(f"cannot bind {config.bind}: {e.strerror}") from None
    return reserved


def _serve_one(
    config: ServerConfig,
    cores: int,
    index: int,
    total: int,
    listening: Event,
    supervisor: int,
    engines: list[tuple[str, str]],
) -> None:
    """One server process, or front end of the engines at engines' (address, device) (spawned):
    its own logging, thread settings and event loop."""
    _end_with(supervisor)
    from bertserve.app.front_end_imports import keep_torch_out
    from bertserve.observability.logs import configure_logging

    configure_logging(config.log_level, config.log_format, process=f"[{index}/{total}] ")
    if engines:
        keep_torch_out()  # before the imports below bring in transformers
    from bertserve.app.hosting import EngineAddress
    from bertserve.app.server import serve_one_process
    from bertserve.observability.telemetry import configure_tracing

    configure_tracing()
    links = [EngineAddress(address, _front_end_identity(index), device) for address, device in engines]
    serve_one_process(config, cores, share_port=True, engines=links, on_listening=listening.set)


def _front_end_identity(index: int) -> str:
    """The name front end index (from 1) connects to its engines under; a restarted one keeps it."""
    return f"front-end-{index}"


def _serve_engine(
    config: ServerConfig, cores: int, address: str, ready: Event, supervisor: int, label: str, models_file: Path
) -> None:
    """An engine process (spawned)."""
    _end_with(supervisor)
    from bertserve.app.engine import serve_engine
    from bertserve.observability.logs import configure_logging
    from bertserve.observability.telemetry import configure_tracing

    configure_logging(config.log_level, config.log_format, process=f"[{label}] ")
    configure_tracing()
    serve_engine(config, cores, address, on_ready=ready.set, supervisor=supervisor, models_file=models_file)


def _end_with(supervisor: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies, even by SIGKILL: no orphaned servers."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above
        sys.exit(0)
