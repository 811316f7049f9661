"""Several server processes on one port: ``server.processes``.

One Python process serves about a thousand calls a second at most (940-1280 measured with a
tiny model on 2 cores, 1250 with a BERT-base on an H100): gRPC, tokenization and the batcher
share its GIL, and a model's eager forward passes wait on it between ops. With ``processes: N``
the ``serve`` command starts N full servers that bind the same port (SO_REUSEPORT); the kernel
spreads incoming connections over them, each loads every model, and the cores are split between
their torch thread pools. Connections, not calls, are spread: a client reaches several processes
only over several connections (the Python client's ``channels``). This process supervises: it
restarts a server that dies after it started, and passes SIGTERM and SIGINT on.
"""

from __future__ import annotations

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
from types import FrameType

from bertserve.app.config import ServerConfig

__all__ = ["serve_processes"]

log = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 120.0  # binding comes before models load, so this is imports and plugin discovery
_RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def serve_processes(config: ServerConfig) -> int:
    """Run config.processes servers on one port until SIGTERM or SIGINT; the exit status."""
    reserved = _reserve_port(config)  # held open, so the port stays ours while servers restart
    port = reserved.getsockname()[1]
    from bertserve.runtime.threads import cpu_cores  # no torch in the supervisor: joblib counts

    cores = max(1, cpu_cores() // config.processes)  # each process's share, split again between its workers
    child_config = replace(config, port=port, processes=1)
    context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or locks
    samples = _serve_metrics_of_all(config)
    stopping = False
    children: list[tuple[BaseProcess, Event]] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second signal: no more waiting for the servers to drain
            log.warning("second %s: stopping the servers now", signal.Signals(signum).name)
            for process, _ in children:
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
            args=(child_config, cores, index, config.processes, listening, os.getpid()),
            name=f"bertserve-{index}",
        )
        process.start()
        return process, listening

    log.info("%d server processes on %s (port %d), %d cores each", config.processes, child_config.bind, port, cores)
    children.extend(start(i + 1) for i in range(config.processes))
    try:
        for index, (process, listening) in enumerate(children, start=1):
            if not _started(process, listening, lambda: stopping) and not stopping:
                log.error("process %d did not start serving (exit status %s)", index, process.exitcode)
                return 1
        while not stopping:
            multiprocessing.connection.wait([p.sentinel for p, _ in children], timeout=0.5)
            for i, (process, _) in enumerate(children):
                if process.is_alive() or stopping:
                    continue
                log.error("process %d exited (exit status %s); restarting it", i + 1, process.exitcode)
                _forget_samples_of(process)
                time.sleep(_RESTART_DELAY_S)
                children[i] = start(i + 1)
        return 0
    finally:
        _stop_all([p for p, _ in children], config.grace_period_s)
        reserved.close()
        if samples is not None:
            shutil.rmtree(samples, ignore_errors=True)


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


def _serve_one(config: ServerConfig, cores: int, index: int, total: int, listening: Event, supervisor: int) -> None:
    """One server process (spawned): its own logging, thread settings and event loop."""
    _end_with(supervisor)
    from bertserve.app.server import serve_one_process
    from bertserve.observability.logs import configure_logging
    from bertserve.observability.telemetry import configure_tracing

    configure_logging(config.log_level, config.log_format, process=f"[{index}/{total}] ")
    configure_tracing()
    serve_one_process(config, cores, share_port=True, on_listening=listening.set)


def _end_with(supervisor: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies, even by SIGKILL: no orphaned servers."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above
        sys.exit(0)
