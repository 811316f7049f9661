"""Client and AsyncClient stay in step: the same methods, signatures and docstrings, each unary
method made from its one definition in bertserve_client._calls. No server needed."""

from __future__ import annotations

import inspect
import typing

import pytest

from bertserve_client import (
    Answers,
    AsyncClient,
    Batch,
    Classifications,
    Client,
    Entities,
    FillMaskResults,
    ReplacedTokensResults,
    Usage,
    _calls,
)

# The RPCs with code of their own in each flavour: their items and results are iterators of that flavour.
STREAMING = {"embed_stream"}


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _definitions() -> dict[str, typing.Callable[..., object]]:
    """The functions of _calls that define a client method: those that return a Call."""
    return {
        name: function
        for name, function in vars(_calls).items()
        if inspect.isfunction(function)
        and function.__module__ == _calls.__name__
        and typing.get_origin(typing.get_type_hints(function).get("return")) is _calls.Call
    }


def test_both_clients_have_the_same_methods() -> None:
    assert _public(Client) == _public(AsyncClient)
    assert set(_definitions()) | STREAMING <= _public(Client)


@pytest.mark.parametrize("name", sorted(_public(Client) - STREAMING))
def test_a_method_has_the_same_signature_and_docstring_in_both(name: str) -> None:
    blocking, awaited = getattr(Client, name), getattr(AsyncClient, name)
    if isinstance(blocking, property):
        assert isinstance(awaited, property) and blocking.__doc__ == awaited.__doc__
        return
    assert inspect.signature(blocking) == inspect.signature(awaited)
    assert inspect.getdoc(blocking) and inspect.getdoc(blocking) == inspect.getdoc(awaited)
    assert not inspect.iscoroutinefunction(blocking)
    assert inspect.iscoroutinefunction(awaited)


@pytest.mark.parametrize("name", sorted(_definitions()))
def test_a_unary_method_is_its_definition(name: str) -> None:
    define = _definitions()[name]
    method = getattr(Client, name)
    assert method.__name__ == name and method.__qualname__ == f"Client.{name}"
    assert method.__doc__ == define.__doc__
    signature, defined = inspect.signature(method), inspect.signature(define)
    self, *parameters = signature.parameters.values()
    assert self.name == "self"
    assert [(p.name, p.kind, p.default) for p in parameters] == [
        (p.name, p.kind, p.default) for p in defined.parameters.values()
    ]
    hints = typing.get_type_hints(define)
    (returns,) = typing.get_args(hints["return"])  # what the Call's parser makes
    assert typing.get_type_hints(method) == {**hints, "return": returns}
    assert signature.return_annotation == returns
    # Bound, the method takes the definition's arguments and nothing else.
    with Client("localhost:1") as client:
        assert list(inspect.signature(getattr(client, name)).parameters) == list(defined.parameters)


def test_the_streams_take_the_same_options() -> None:
    blocking = inspect.signature(Client.embed_stream).parameters
    awaited = inspect.signature(AsyncClient.embed_stream).parameters
    assert [(p.name, p.kind, p.default) for p in blocking.values()] == [
        (p.name, p.kind, p.default) for p in awaited.values()
    ]
    assert inspect.isgeneratorfunction(Client.embed_stream)
    assert inspect.isasyncgenfunction(AsyncClient.embed_stream)


def test_the_constructors_take_the_same_arguments() -> None:
    assert inspect.signature(Client) == inspect.signature(AsyncClient)


@pytest.mark.parametrize("kind", [Answers, Classifications, Entities, FillMaskResults, ReplacedTokensResults])
def test_the_named_results_are_batches(kind: type[Batch[object]]) -> None:
    usage = Usage(tokens=3, queue_time_ns=0, inference_time_ns=1, tokenization_time_ns=2)
    results = kind([[], []], model="tiny", usage=usage)
    assert isinstance(results, Batch) and issubclass(kind, list)
    assert results == [[], []] and results.model == "tiny" and results.usage is usage


@pytest.mark.parametrize("token", ["two words", "line\nbreak", "caf\u00e9", "tab\there"])
def test_a_token_no_header_can_carry_is_refused_when_the_client_is_made(token: str) -> None:
    """gRPC would fail every call with INTERNAL "Invalid metadata" instead."""
    with pytest.raises(ValueError, match="the token holds characters a gRPC header cannot carry"):
        Client("localhost:1", token=token)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_a_deadline_that_is_no_number_of_seconds_is_refused(timeout: float) -> None:
    """gRPC would take it as expired, and the call would fail with DEADLINE_EXCEEDED."""
    message = "timeout must be a number of seconds above 0, or None"
    with pytest.raises(ValueError, match=message):
        Client("localhost:1", timeout=timeout)
    with Client("localhost:1") as client, pytest.raises(ValueError, match=message):
        client.embed("x", timeout=timeout)
