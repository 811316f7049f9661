"""The ``bertserve`` command's client subcommands: each calls a running server through the Python
client and prints its answer as JSON (see bertserve.app.cli for their arguments)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from typing import Any

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


def _call(fn: Any) -> int:
    from bertserve_client import BertserveError

    try:
        return _print(fn())
    except BertserveError as e:
        print(f"bertserve: {e}", file=sys.stderr)
        return 1


def embed(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            result = client.embed(
                args.texts, model=args.model, pooling=args.pooling, normalize=args.normalize, truncate=args.truncate
            )
        return {
            "model": result.model,
            "embeddings": result.embeddings.tolist(),
            "token_counts": result.token_counts,
            "truncated_indices": result.truncated_indices,
        }

    return _call(run)


def tokenize(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            tokenizations = client.tokenize(
                args.texts,
                pairs=args.pair,
                model=args.model,
                add_special_tokens=not args.no_special_tokens,
                truncate=args.truncate,
                max_length=args.max_length,
            )
        return [asdict(t) for t in tokenizations]

    return _call(run)


def answer(args: argparse.Namespace) -> int:
    if args.context_file is not None:
        context = sys.stdin.read() if str(args.context_file) == "-" else args.context_file.read_text(encoding="utf-8")
    else:
        context = args.context

    def run() -> Any:
        with _client(args) as client:
            answers = client.answer(
                (args.question, context),
                model=args.model,
                top_k=args.top_k,
                handle_impossible_answer=args.handle_impossible_answer,
                max_seq_len=args.max_seq_len,
                doc_stride=args.doc_stride,
                merge_same_text=args.merge_same_text,
            )
        return [asdict(a) for a in answers[0]]

    return _call(run)


def classify(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            results = client.classify(
                args.texts,
                pairs=args.pair,
                model=args.model,
                top_k=args.top_k,
                function=args.function,
                truncate=args.truncate,
            )
        return [[asdict(label) for label in labels] for labels in results]

    return _call(run)


def rerank(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            result = client.rerank(
                args.query, args.documents, model=args.model, truncate=args.truncate, raw_scores=args.raw_scores
            )
        # Best first, each with its text: what a shell user wants to read.
        return [{**asdict(result.documents[i]), "text": args.documents[i]} for i in result.ranking]

    return _call(run)


def similarity(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            scores = client.similarity(args.source, args.sentences, model=args.model, truncate=args.truncate)
        return [{"sentence": sentence, "score": score} for sentence, score in zip(args.sentences, scores, strict=True)]

    return _call(run)


def classify_tokens(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            results = client.classify_tokens(
                args.texts,
                model=args.model,
                aggregation=args.aggregation,
                ignore_labels=[] if args.all_labels else args.ignore_label,
                truncate=args.truncate,
            )
        return [[asdict(entity) for entity in entities] for entities in results]

    return _call(run)


def fill_mask(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            results = client.fill_mask(
                args.texts, model=args.model, top_k=args.top_k, targets=args.targets, truncate=args.truncate
            )
        return [[[asdict(c) for c in mask] for mask in masks] for masks in results]

    return _call(run)


def detect_replaced(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            results = client.detect_replaced_tokens(
                args.texts, model=args.model, aggregate_words=args.words, truncate=args.truncate
            )
        return [asdict(r) for r in results]

    return _call(run)


def models(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            return [asdict(m) for m in client.models()]

    return _call(run)


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
            print(f"bertserve: {e.code().name}: {e.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _entry(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def load(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            return asdict(client.load_model(_entry(args.entry)))

    return _call(run)


def unload(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            return asdict(client.unload_model(args.name))

    return _call(run)


def reload(args: argparse.Namespace) -> int:
    def run() -> Any:
        with _client(args) as client:
            return asdict(client.reload_model(args.name, _entry(args.entry) if args.entry else None))

    return _call(run)
