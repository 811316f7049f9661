"""Domain errors of bertserve, mapped to gRPC status codes in one place (``bertserve.edge.status``).

    BertserveError
    ├── InvalidRequest            INVALID_ARGUMENT: malformed request, empty input, bad option
    │   └── InputTooLong          INVALID_ARGUMENT: an input over the model's token limit
    ├── ModelNotFound             NOT_FOUND: no model of that name is configured
    ├── CapabilityNotSupported    UNIMPLEMENTED: the model cannot do what was asked
    ├── ModelUnavailable          UNAVAILABLE: the model is loading, or the server is draining
    ├── ModelExists               ALREADY_EXISTS: LoadModel of a name that is taken
    ├── PreconditionFailed        FAILED_PRECONDITION: not possible in the server's present state
    │   └── ModelFailed           FAILED_PRECONDITION: the model failed to load (until it is reloaded)
    ├── PermissionDenied          PERMISSION_DENIED: the caller's token may not touch that model
    ├── Overloaded                RESOURCE_EXHAUSTED: queue full, device out of memory
    ├── InternalFailure           INTERNAL: a fault on the model's path, logged once with this request id
    ├── ConfigError               (at start-up, never a call) a configuration or model that cannot load
    └── PluginContractError       (at load, never a call) a plugin claims what it does not implement

Anything else raised while serving a call is INTERNAL and logged with a request id. Messages
name the model, the limit and the offending input index: they reach the caller verbatim.
"""

from __future__ import annotations

__all__ = [
    "BertserveError",
    "CapabilityNotSupported",
    "ConfigError",
    "DeadlineExceeded",
    "InputTooLong",
    "InternalFailure",
    "InvalidRequest",
    "ModelExists",
    "ModelFailed",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "PermissionDenied",
    "PluginContractError",
    "PreconditionFailed",
    "quoted",
]


class BertserveError(Exception):
    """Base of every error whose message is meant for the caller."""


def quoted(text: str, limit: int = 64) -> str:
    """A caller's string for a message: repr'd, and cut, so that a long one cannot swell the status."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


class InvalidRequest(BertserveError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class InputTooLong(InvalidRequest):
    """One input has more tokens than the model accepts and truncation was not asked for."""

    def __init__(self, model: str, index: int, tokens: int, limit: int) -> None:
        # tokens may count a prefix only (a long input is not tokenized to its end): say "more than".
        super().__init__(
            f"input {index} has more than {limit} tokens, the limit of model {model!r}; shorten it or set truncate"
        )
        self.index = index
        self.tokens = tokens
        self.limit = limit


class ModelNotFound(BertserveError):
    """No model of the requested name is configured."""


class CapabilityNotSupported(BertserveError):
    """The model exists but cannot do what was asked (a pooling it lacks, Answer without a QA head)."""


class ModelUnavailable(BertserveError):
    """The model is configured but cannot serve now: loading or shutting down; a retry may succeed."""


class DeadlineExceeded(BertserveError):
    """The call's deadline passed before its work ran: the batcher dropped it unrun. What gRPC says
    of a call past its deadline, whichever of the two notices first, in one process or an engine."""


class ModelExists(BertserveError):
    """A model of that name is already there."""


class PreconditionFailed(BertserveError):
    """The server's state does not allow this now (unloading the default model, say); retrying the
    call unchanged cannot succeed until that state changes."""


class ModelFailed(PreconditionFailed):
    """The model failed to load; retrying the call cannot succeed until the model is loaded again."""


class PermissionDenied(BertserveError):
    """The caller's token is known, but may not act on what the request names."""


class Overloaded(BertserveError):
    """The model cannot take more work now; the caller may retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InternalFailure(BertserveError):
    """A fault in serving (a plugin's exception, a failed pass): already logged, with the request id
    its message carries, so that the caller and the log can be matched."""


class SourceUnavailable(BertserveError):
    """A model's files cannot be reached now (a directory not there yet, a hub that does not
    answer): its load is tried again later."""


class ConfigError(BertserveError):
    """The configuration is wrong or names a model that cannot be loaded as configured."""


class PluginContractError(BertserveError):
    """A plugin claims a capability whose methods it does not implement: its model fails to load."""
