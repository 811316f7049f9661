"""What the edge knows of a call, read once when the call starts.

grpcio's server context reads some of a call's state from grpc core on every access: ``peer()``,
``auth_context()`` and ``peer_identities()`` go to the core call object, which grpcio releases
(and sets to NULL) as soon as the call's task ends. A cancelled stream's async generators are
finalized later than that, so code in their ``finally`` that asks ``context.peer()`` dereferences
NULL and takes the whole process down. Everything the edge needs (peer, metadata, request id,
token name, the model a call names) is therefore read here once, at the start of the call's
handler, while the call is alive, and kept in :data:`current` for the interceptors and servicers.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import grpc

from bertserve.observability import request_ids

__all__ = ["CallFacts", "current", "is_local_peer", "read"]

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(slots=True)
class CallFacts:
    """One call's facts; token_name and model are filled in by the layers that learn them."""

    method: str
    peer: str
    metadata: Metadata
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    token_name: str = ""  # the caller's token, once auth has looked it up (known or refused)
    model: str = ""  # the model a call names where its request does not say it in a field (LoadModel's entry)
    code: grpc.StatusCode | None = None  # what the call was aborted with; None: it was not
    retry_after_ms: int = 0  # the retry hint it was refused with; 0: none

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]


#: The facts of the call being served (None outside a call, or before the edge read them).
current: ContextVar[CallFacts | None] = ContextVar("bertserve_call_facts", default=None)


def read(
    method: str, metadata: Sequence[tuple[str, str | bytes]] | None, context: grpc.aio.ServicerContext
) -> CallFacts:
    """The facts of a call whose handler has just started, kept in :data:`current`.

    metadata: the handler call details' copy, which grpc decoded once as the call arrived; asking
    the context again would decode it again (and log again for a header that is not UTF-8).
    """
    kept = tuple(metadata or ())
    facts = CallFacts(method, _peer(context), kept, request_ids.from_metadata(kept))
    current.set(facts)
    request_ids.current.set(facts.request_id)
    return facts


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # a context without a live call (or a proxy that lacks it): the peer is unknown
        return ""


def is_local_peer(peer: str) -> bool:
    """True for a peer on this machine: a loopback address (127.0.0.0/8, ::1, IPv4-mapped 127.x)
    or a Unix socket. grpc writes peers as ``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``,
    ``unix:/path`` (a client's own socket path is often empty: ``unix:``)."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return True
    if scheme not in ("ipv4", "ipv6"):
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
