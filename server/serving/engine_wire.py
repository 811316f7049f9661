"""The messages between front ends and an engine: what goes on the wire, and nothing else.

Every message is a list of frames: a one-byte kind, a small msgpack header, and for the calls'
data raw array frames (bertserve.serving.engine_socket packs them into one zmq frame). A call's
token ids travel as one int32 frame (and its segment ids as one int8 frame) for all its sequences;
its results come back as one frame per array, with the dtype and shape in the header. No Python
object is pickled per call: numpy reads the frames where zmq put them (np.frombuffer).

The model table (what the engine serves, with each model's spec and info) and the admin changes
are pickled: they are rare, and they go between processes of one server over a socket in a
directory only its user can open.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from bertserve import errors
from bertserve.api import Encoding, Head, ModelInfo, ModelSpec, Pooling
from bertserve.errors import BertserveError
from bertserve.ops import Completed, Embedded, EmbedOp, HeadOp, Op

__all__ = [
    "ADMIN",
    "ADMIN_DONE",
    "CANCEL",
    "DONE",
    "FAILED",
    "HELLO",
    "PING",
    "PONG",
    "RUN",
    "TABLE",
    "TABLE_SEEN",
    "ModelEntry",
    "RunRequest",
    "Table",
    "decode_error",
    "decode_results",
    "decode_run",
    "encode_error",
    "encode_results",
    "encode_run",
    "error_fields",
    "error_of",
]

# Front end -> engine.
HELLO = b"h"  # a front end (re)connected: send it the table
RUN = b"r"  # run an operation over a call's sequences
CANCEL = b"c"  # the call went away: drop its sequences
ADMIN = b"a"  # load, unload or reload a model
TABLE_SEEN = b"s"  # the front end applied the table of this version
PING = b"p"  # is the engine's loop answering, and is a pass stuck? (the supervisor asks)
STOP = b"x"  # the front ends have drained: stop (the supervisor says)
GONE = b"g"  # a front end died: drop its calls (the supervisor says)
DRAIN = b"z"  # the server drains: serve calls in the order they came (the supervisor says)
# Engine -> front end.
TABLE = b"t"  # the models the engine serves now
DONE = b"d"  # a call's results (or an admin change's outcome)
FAILED = b"f"  # a call's error
PONG = b"o"  # the answer to PING
ADMIN_DONE = b"A"  # an admin change's outcome

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


@dataclass(frozen=True)
class RunRequest:
    """One call's work, as the engine reads it."""

    call: int  # the front end's number for the call; the reply carries it
    model: str
    generation: int  # the instance of model the call holds (ModelEntry.generation)
    op: Op[Any]
    encodings: list[Encoding]
    deadline: float | None  # time.monotonic(): one clock for every process of the machine
    request_id: str
    trace: dict[str, str]  # the call's trace context, as W3C headers (empty when tracing is off)


def encode_run(
    call: int,
    model: str,
    generation: int,
    op: Op[Any],
    encodings: Sequence[Encoding],
    *,
    deadline: float | None,
    request_id: str,
    trace: dict[str, str],
) -> list[bytes | memoryview]:
    lengths = [len(e.ids) for e in encodings]
    header = _encoder.encode([call, model, generation, _op_fields(op), deadline, request_id, trace, lengths])
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32, count=sum(lengths))
    types = np.fromiter((t for e in encodings for t in e.type_ids), dtype=np.int8, count=sum(lengths))
    return [RUN, header, ids.data, types.data]


def decode_run(frames: Sequence[bytes | memoryview]) -> RunRequest:
    call, model, generation, op, deadline, request_id, trace, lengths = _decoder.decode(frames[1])
    ids = np.frombuffer(frames[2], dtype=np.int32).tolist()
    types = np.frombuffer(frames[3], dtype=np.int8).tolist()
    encodings, start = [], 0
    for n in lengths:
        part = slice(start, start + n)
        encodings.append(Encoding(ids[part], [], types[part], [], [], [], [], n))
        start += n
    return RunRequest(call, model, generation, _op_of(op), encodings, deadline, request_id, trace)


def _op_fields(op: Op[Any]) -> list[Any]:
    if isinstance(op, EmbedOp):
        return ["embed", op.pooling.value, op.with_token_states]
    if isinstance(op, HeadOp):
        return ["head", op.head.value]
    raise TypeError(f"no wire form for the operation {op!r}")


def _op_of(fields: list[Any]) -> Op[Any]:
    if fields[0] == "embed":
        return EmbedOp(Pooling(fields[1]), bool(fields[2]))
    if fields[0] == "head":
        return HeadOp(Head(fields[1]))
    raise ValueError(f"unknown operation {fields!r}")


def encode_results(
    call: int, results: Sequence[Completed[Any]], *, tokens_per_s: float, retry_after_s: float
) -> list[bytes | memoryview]:
    """A call's results: per sequence its waits and pass, and its arrays as frames."""
    rows: list[list[Any]] = []
    frames: list[bytes | memoryview] = []
    for done in results:
        value = done.value
        arrays = [value.pooled, value.token_states] if isinstance(value, Embedded) else [value]
        shapes: list[list[Any] | None] = []
        for array in arrays:
            if array is None:
                shapes.append(None)
                continue
            array = np.ascontiguousarray(array)
            shapes.append([array.dtype.str, list(array.shape)])
            frames.append(array.data.cast("B"))
        kind = "embedded" if isinstance(value, Embedded) else "array"
        rows.append([kind, shapes, done.queue_ns, done.pass_id, done.pass_ns])
    return [DONE, _encoder.encode([call, rows, tokens_per_s, retry_after_s]), *frames]


@dataclass(frozen=True)
class Results:
    """A call's results, with the engine's latest figures for the model."""

    call: int
    completed: list[Completed[Any]]
    tokens_per_s: float
    retry_after_s: float


def decode_results(frames: Sequence[bytes | memoryview]) -> Results:
    call, rows, tokens_per_s, retry_after_s = _decoder.decode(frames[1])
    data = iter(frames[2:])
    completed: list[Completed[Any]] = []
    for kind, shapes, queue_ns, pass_id, pass_ns in rows:
        arrays = [
            None if shape is None else np.frombuffer(next(data), dtype=np.dtype(shape[0])).reshape(shape[1])
            for shape in shapes
        ]
        value: Any = Embedded(arrays[0], arrays[1]) if kind == "embedded" else arrays[0]
        completed.append(Completed(value, queue_ns, pass_id, pass_ns))
    return Results(call, completed, tokens_per_s, retry_after_s)


def error_fields(error: BertserveError) -> tuple[str, str, float | None]:
    """An error as plain values: its class's name, its message, its retry hint."""
    return type(error).__name__, str(error), getattr(error, "retry_after_s", None)


def error_of(kind: str, message: str, retry_after_s: float | None = None) -> BertserveError:
    """The domain error of error_fields' values (INTERNAL for a kind this process does not know)."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, BertserveError)):
        return errors.InternalFailure(message)
    if cls is errors.Overloaded:
        return errors.Overloaded(message, retry_after_s=retry_after_s)
    error: BertserveError = Exception.__new__(cls)  # some take other arguments; the message is what crosses
    BertserveError.__init__(error, message)
    return error


def encode_error(call: int, error: BertserveError) -> list[bytes | memoryview]:
    return [FAILED, _encoder.encode([call, *error_fields(error)])]


def decode_error(frames: Sequence[bytes | memoryview]) -> tuple[int, BertserveError]:
    call, kind, message, retry = _decoder.decode(frames[1])
    return call, error_of(kind, message, retry)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the table: what a front end needs to serve it."""

    spec: ModelSpec
    generation: int  # which instance of the name: a new one for each load or reload
    state: str  # a ModelState value
    info: ModelInfo | None
    failure_reason: str
    load_attempts: int
    next_attempt_at: float | None
    healthy: bool  # its passes are not all failing


@dataclass(frozen=True)
class Table:
    """The models an engine serves, in order; version grows with each change."""

    engine: str  # the engine's start token: a restarted engine's generations are new
    version: int
    default_model: str
    models: tuple[ModelEntry, ...]


def encode_pickled(kind: bytes, value: object) -> list[bytes | memoryview]:
    return [kind, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)]


def decode_pickled(frames: Sequence[bytes | memoryview]) -> Any:
    return pickle.loads(frames[1])


def encode_small(kind: bytes, *values: Any) -> list[bytes | memoryview]:
    return [kind, _encoder.encode(list(values))]


def decode_small(frames: Sequence[bytes | memoryview]) -> list[Any]:
    return list(_decoder.decode(frames[1]))
