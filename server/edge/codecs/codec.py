"""A codec: how one RPC's request becomes a domain query, and its flow's result becomes the reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["OFF_LOOP_PARTS", "Codec"]

Req = TypeVar("Req")
Q = TypeVar("Q")
T = TypeVar("T")
Resp = TypeVar("Resp")


#: Messages in a reply above which it is built on a thread, not on the event loop: a Tokenize of a
#: few megabytes of text has a million tokens, a message each, and takes seconds to build, which
#: every other call would wait through. (The thread takes the interpreter lock in turns with the
#: loop, so the other calls go on meanwhile.)
OFF_LOOP_PARTS = 20_000


def _few(result: object) -> int:
    return 0


@dataclass(frozen=True)
class Codec(Generic[Req, Q, T, Resp]):
    """decode: the request as the flow's query (InvalidRequest for a value the contract does not
    know); encode: the flow's result as the reply; parts: about how many messages that reply holds
    (for those whose replies grow with their tokens)."""

    decode: Callable[[Req], Q]
    encode: Callable[[T], Resp]
    parts: Callable[[T], int] = _few

    def encoded_off_loop(self, result: T) -> bool:
        """Whether the reply to result is large enough to be built on a thread."""
        return self.parts(result) > OFF_LOOP_PARTS
