"""The ``bertserve`` command's client subcommands: each calls a running server through the Python
client and prints its answer as JSON (see bertserve.app.cli for their arguments)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

__all__ = [
    "answer",
    "classify",
    "classify_tokens",
    "detect_replaced",
    "embed",
    "fill_mask",
    "health",
    "load",
    "models",
    "reload",
    "rerank",
    "similarity",
    "tokenize",
    "unload",
]


T = TypeVar("T")


def _command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose input cannot be sent (a file that cannot be read, text that is not UTF-8)
    says so in one line and exits 2, as a usage error does, with no traceback."""

    @functools.wraps(run)
    def checked(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UnicodeError as e:
            print(f"bertserve: the input is not UTF-8 text ({e})", file=sys.stderr)
        except (OSError, ValueError) as e:
            print(f"bertserve: {e}", file=sys.stderr)
        return 2

    return checked


def _client(args: argparse.Namespace) -> Any:
    from bertserve_client import Client, tls_credentials

    credentials = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        try:
            credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except (ValueError, OSError) as e:
            print(f"bertserve: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return Client(args.target, timeout=args.timeout, credentials=credentials, token=args.token)


def _print(value: Any) -> int:
    try:
        print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a pipe's writer does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    return 0


def _call(args: argparse.Namespace, ask: Callable[[Any], T], show: Callable[[T], Any] = lambda value: value) -> int:
    """Ask the server through a client of the command's arguments; print what show makes of the
    answer as JSON (exit 0), or the error (exit 1)."""
    from bertserve_client import BertserveError

    try:
        with _client(args) as client:
            answer = ask(client)
        return _print(show(answer))
    except BertserveError as e:
        print(f"bertserve: {e}", file=sys.stderr)
        return 1


@_command
def embed(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.embed(
            args.texts, model=args.model, pooling=args.pooling, normalize=args.normalize, truncate=args.truncate
        ),
        lambda result: {
            "model": result.model,
            "embeddings": result.embeddings.tolist(),
            "token_counts": result.token_counts,
            "truncated_indices": result.truncated_indices,
        },
    )


@_command
def tokenize(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.tokenize(
            args.texts,
            pairs=args.pair,
            model=args.model,
            add_special_tokens=not args.no_special_tokens,
            truncate=args.truncate,
            max_length=args.max_length,
        ),
        lambda tokenizations: [asdict(t) for t in tokenizations],
    )


@_command
def answer(args: argparse.Namespace) -> int:
    if args.context_file is not None:
        context = sys.stdin.read() if str(args.context_file) == "-" else args.context_file.read_text(encoding="utf-8")
    else:
        context = args.context
    return _call(
        args,
        lambda c: c.answer(
            (args.question, context),
            model=args.model,
            top_k=args.top_k,
            handle_impossible_answer=args.handle_impossible_answer,
            max_seq_len=args.max_seq_len,
            doc_stride=args.doc_stride,
            merge_same_text=args.merge_same_text,
        ),
        lambda answers: [asdict(a) for a in answers[0]],
    )


@_command
def classify(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.classify(
            args.texts,
            pairs=args.pair,
            model=args.model,
            top_k=args.top_k,
            function=args.function,
            truncate=args.truncate,
        ),
        lambda results: [[asdict(label) for label in labels] for labels in results],
    )


@_command
def rerank(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.rerank(
            args.query, args.documents, model=args.model, truncate=args.truncate, raw_scores=args.raw_scores
        ),
        # Best first, each with its text: what a shell user wants to read.
        lambda result: [{**asdict(result.documents[i]), "text": args.documents[i]} for i in result.ranking],
    )


@_command
def similarity(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.similarity(args.source, args.sentences, model=args.model, truncate=args.truncate),
        lambda scores: [{"sentence": s, "score": score} for s, score in zip(args.sentences, scores, strict=True)],
    )


@_command
def classify_tokens(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.classify_tokens(
            args.texts,
            model=args.model,
            aggregation=args.aggregation,
            ignore_labels=[] if args.all_labels else args.ignore_label,
            truncate=args.truncate,
        ),
        lambda results: [[asdict(entity) for entity in entities] for entities in results],
    )


@_command
def fill_mask(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.fill_mask(
            args.texts, model=args.model, top_k=args.top_k, targets=args.targets, truncate=args.truncate
        ),
        lambda results: [[[asdict(candidate) for candidate in mask] for mask in masks] for masks in results],
    )


@_command
def detect_replaced(args: argparse.Namespace) -> int:
    return _call(
        args,
        lambda c: c.detect_replaced_tokens(
            args.texts, model=args.model, aggregate_words=args.words, truncate=args.truncate
        ),
        lambda results: [asdict(r) for r in results],
    )


@_command
def models(args: argparse.Namespace) -> int:
    return _call(args, lambda c: c.models(), lambda found: [asdict(m) for m in found])


@_command
def health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _client(args) as client:
        stub = health_pb2_grpc.HealthStub(client.channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout, metadata=client.metadata
            )
        except grpc.RpcError as e:
            code, details = e.code(), e.details()  # type: ignore[attr-defined]
            if code is grpc.StatusCode.NOT_FOUND and not details:  # what grpc's health service says of a name
                details = f"the server serves no model or service named {args.service!r}"
            print(f"bertserve: {code.name}: {details}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _entry(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


@_command
def load(args: argparse.Namespace) -> int:
    return _call(args, lambda c: c.load_model(_entry(args.entry)), asdict)


@_command
def unload(args: argparse.Namespace) -> int:
    return _call(args, lambda c: c.unload_model(args.name), asdict)


@_command
def reload(args: argparse.Namespace) -> int:
    return _call(args, lambda c: c.reload_model(args.name, _entry(args.entry) if args.entry else None), asdict)
