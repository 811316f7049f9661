"""A codec: how one RPC's request becomes a domain query, and its flow's result becomes the reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Codec"]

Req = TypeVar("Req")
Q = TypeVar("Q")
T = TypeVar("T")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Codec(Generic[Req, Q, T, Resp]):
    """decode: the request as the flow's query (InvalidRequest for a value the contract does not
    know); encode: the flow's result as the reply."""

    decode: Callable[[Req], Q]
    encode: Callable[[T], Resp]
