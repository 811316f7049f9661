"""The checked configuration as the server uses it: frozen dataclasses, with the defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bertserve.api import ModelSpec

__all__ = ["AdminConfig", "AuthConfig", "ServerConfig", "TlsConfig", "TokenGrant"]


@dataclass(frozen=True)
class TlsConfig:
    """PEM files of the gRPC port's certificate; a client CA turns on mutual TLS."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True)
class TokenGrant:
    """One bearer token, as the server keeps it: its name, the sha256 of the token, what it may do."""

    name: str
    digest: bytes
    scopes: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True)
class AuthConfig:
    """Token auth: on when tokens_file or the BERTSERVE_TOKENS variable lists tokens."""

    tokens_file: str | None = None
    protect_reflection: bool = False  # reflection needs a token too (health always stays open)
    tokens: tuple[TokenGrant, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


@dataclass(frozen=True)
class AdminConfig:
    """Who may call the admin RPCs (LoadModel, UnloadModel, ReloadModel) and what their entries may ask."""

    allow_remote_without_auth: bool = False  # without tokens: admin calls from any peer, not only loopback
    allow_pickle: bool = False  # a run-time entry may set allow_pickle: true
    allowed_sources: tuple[str, ...] = ()  # local roots and hub ids (globs) a run-time source must match; (): any
    max_entry_bytes: int = 16 * 1024  # the largest run-time entry accepted


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings, checked, with its models as plugins receive them."""

    address: str = "0.0.0.0"
    port: int = 50051
    log_level: str = "info"
    log_format: str = "text"  # text | json (one object per line)
    access_log: bool = True  # one line per call on the bertserve.access logger
    event_loop: str = "auto"  # auto (uvloop where installed) | uvloop | asyncio
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on this port (0: any free one); None: off
    default_model: str = ""
    grace_period_s: float = 10.0
    drain_delay_s: float = 0.0  # on SIGTERM: NOT_SERVING first, still serving this long, then stop accepting
    load_retry_max_s: float = 60.0  # a load that could not reach its files is retried, the pause doubling up to this
    #: Processes sharing the port (the kernel spreads connections over them); auto: chosen from
    #: the cores (bertserve.app.process_plan).
    processes: int | Literal["auto"] = "auto"
    #: Whether those processes are front ends that feed one engine process, which loads each model
    #: once; auto: they are when there are several. False with several: each is a whole server.
    engine: bool | Literal["auto"] = "auto"
    engine_stall_timeout_s: float = 60.0  # an engine that answers no ping, or runs one pass, this long is restarted
    torch_threads: int = 0  # torch intra-op threads per worker; 0: the process's cores split between its CPU workers
    tokenizer_threads: int = 2  # the pool that tokenizes and decodes answers off the event loop
    stream_max_in_flight: int = 64  # items of one EmbedStream being worked on at once
    max_concurrent_calls: int = 1024  # EncoderService calls in flight; more are refused with a retry hint
    max_input_bytes: int = 8 * 1024 * 1024  # one call's (or stream item's) request, checked before any work
    max_receive_message_bytes: int = 64 * 1024 * 1024  # gRPC's limit on a request message
    max_send_message_bytes: int = 64 * 1024 * 1024  # gRPC's limit on a reply; larger replies are refused up front
    tls: TlsConfig | None = None  # None: plaintext
    auth: AuthConfig = field(default_factory=AuthConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)

    @property
    def bind(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"
