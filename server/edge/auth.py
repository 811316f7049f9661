"""Bearer-token authentication and scopes, checked before any servicer runs.

Tokens come from a file or an environment variable, never from the server's YAML. Each has a
name (what logs show; the token itself is never logged), the kinds of RPC it may call
(inference, admin) and the models it may use. A presented token is hashed and compared with
every known token's hash in constant time.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bertserve.edge import call_facts
from bertserve.edge.handlers import replace_behaviour
from bertserve.edge.parsing import Unparsable
from bertserve.edge.status import abort
from bertserve.errors import PermissionDenied, quoted

__all__ = [
    "ADMIN",
    "ANY_SCOPE",
    "INFERENCE",
    "AuthInterceptor",
    "LocalAdminOnly",
    "Principal",
    "TokenTable",
    "may_see",
    "require_model",
]

log = logging.getLogger(__name__)

INFERENCE = "inference"
ADMIN = "admin"
ALL_MODELS = "*"
ANY_SCOPE = ""  # an RPC that any known token may call

#: What the current call's token may do (None when auth is off or the RPC is open to all).
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("bertserve_principal", default=None)


def require_model(model: str) -> None:
    """For a model a request names in a field of its own (LoadModel's entry): PermissionDenied
    when the current call's token may not use it."""
    principal = _principal.get()
    if principal is not None and not principal.may_use(model):
        raise PermissionDenied(f"token {principal.name!r} may not use model {quoted(model)}")


def may_see(model: str) -> bool:
    """Whether the current call's token may use model (ListModels shows a token its own models)."""
    principal = _principal.get()
    return principal is None or principal.may_use(model)


@dataclass(frozen=True)
class Principal:
    """What one token may do."""

    name: str
    digest: bytes  # sha256 of the token
    scopes: frozenset[str]
    models: frozenset[str]  # model names, or ALL_MODELS

    def may_use(self, model: str) -> bool:
        return ALL_MODELS in self.models or model in self.models


class TokenTable:
    """The known tokens, looked up by the token a caller presents."""

    def __init__(self, principals: Sequence[Principal]) -> None:
        self._principals = tuple(principals)

    def __len__(self) -> int:
        return len(self._principals)

    def find(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for principal in self._principals:  # every one, always: the time taken does not depend on which
            if hmac.compare_digest(principal.digest, digest):
                found = principal
        return found


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls without a known token (UNAUTHENTICATED) or outside its scopes (PERMISSION_DENIED).

    rpc_scopes maps each protected method ("/package.Service/Method") to the scope it needs;
    methods not in it (health, and reflection unless protected) are open to all.
    """

    def __init__(self, tokens: TokenTable, rpc_scopes: dict[str, str], default_model: str) -> None:
        self._tokens = tokens
        self._rpc_scopes = rpc_scopes
        self._default_model = default_model

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        scope = self._rpc_scopes.get(details.method)  # None: open to all
        if handler is None or scope is None:
            return handler
        verdict = self._check(details, scope)
        if isinstance(verdict, Refusal):
            return _refusing(handler, verdict)
        return _with_principal(handler, verdict, self._model_refusal)

    def _check(self, details: grpc.HandlerCallDetails, scope: str) -> Principal | Refusal:
        token = _bearer(details.invocation_metadata)  # type: ignore[arg-type]
        if token is None:
            return Refusal(
                grpc.StatusCode.UNAUTHENTICATED, "this server requires a token: send 'authorization: Bearer <token>'"
            )
        if not token:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, "the authorization metadata is not 'Bearer <token>'")
        principal = self._tokens.find(token)
        if principal is None:
            log.info("refused %s: unknown token", details.method)
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, "the token is not known to this server")
        if scope != ANY_SCOPE and scope not in principal.scopes:
            log.info("refused %s to token %r: it lacks the %s scope", details.method, principal.name, scope)
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {principal.name!r} may not call {details.method}: it needs the {scope} scope",
                token_name=principal.name,
            )
        return principal

    def _model_refusal(self, principal: Principal, request: Any) -> Refusal | None:
        model = _model_of(request)
        if model is None or principal.may_use(model or self._default_model):
            return None
        shown = f"model {quoted(model)}" if model else f"the default model ({quoted(self._default_model)})"
        return Refusal(grpc.StatusCode.PERMISSION_DENIED, f"token {principal.name!r} may not use {shown}")


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str
    token_name: str = ""  # the known token refused, for the access log


def _note_caller(name: str) -> None:
    facts = call_facts.current.get()
    if facts is not None:
        facts.token_name = name


def _model_of(request: Any) -> str | None:
    """The model a request names ("" for the default), or None for a request that names none."""
    if not hasattr(request, "DESCRIPTOR"):  # one that did not parse: its handler says so
        return None
    if "request" in request.DESCRIPTOR.fields_by_name:  # an EmbedStream item
        request = request.request
    fields = request.DESCRIPTOR.fields_by_name
    if "model" in fields:
        return str(request.model)
    if "name" in fields:  # GetModel and the model-management requests
        return str(request.name)
    return None


def _refusing(handler: grpc.RpcMethodHandler, refusal: Refusal) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _note_caller(refusal.token_name)
        await abort(context, refusal.code, refusal.message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _note_caller(refusal.token_name)
        await abort(context, refusal.code, refusal.message)
        yield  # pragma: no cover - abort raises

    return replace_behaviour(handler, unary, streaming)


def _with_principal(
    handler: grpc.RpcMethodHandler,
    principal: Principal,
    refusal_of: Callable[[Principal, Any], Refusal | None],
) -> grpc.RpcMethodHandler:
    """The handler, run as principal: each request's model is checked against the token's models."""
    inner = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _note_caller(principal.name)
        _principal.set(principal)
        if (refusal := refusal_of(principal, request)) is not None:
            await abort(context, refusal.code, refusal.message)
        return await inner(request, context)

    async def streaming(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _note_caller(principal.name)

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                if (refusal := refusal_of(principal, request)) is not None:
                    # An item of a stream: refused alone, the stream goes on (see EmbedStream).
                    yield Unparsable(refusal.message, refusal.code)
                else:
                    yield request

        async with contextlib.aclosing(inner(checked(), context)) as responses:
            async for response in responses:
                yield response

    return replace_behaviour(handler, unary, streaming)


class LocalAdminOnly(grpc.aio.ServerInterceptor):
    """Without tokens, the admin RPCs answer callers on this machine only (loopback or a Unix
    socket): anyone who can reach the port could otherwise load any file as a model."""

    def __init__(self, admin_methods: Collection[str]) -> None:
        self._admin_methods = frozenset(admin_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method not in self._admin_methods or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        rpc = details.method.rsplit("/", 1)[-1]

        async def local_only(request: Any, context: grpc.aio.ServicerContext) -> Any:
            facts = call_facts.current.get()
            peer = facts.peer if facts is not None else ""
            if not call_facts.is_local_peer(peer):
                log.warning("refused %s from %s: admin calls without tokens are for this machine only", rpc, peer)
                await abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{rpc} is an admin call, and this server has no tokens, so it answers admin calls from this "
                    f"machine only (loopback), not from {peer or 'an unknown peer'}. To call it from elsewhere, "
                    "configure tokens with the admin scope (server.auth.tokens_file or BERTSERVE_TOKENS), or set "
                    "server.admin.allow_remote_without_auth: true to open admin calls to every peer without auth",
                )
            return await inner(request, context)

        return replace_behaviour(handler, local_only, None)  # the admin RPCs are all unary
