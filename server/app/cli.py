"""The ``bertserve`` command: ``serve`` runs the server; ``embed``, ``tokenize``, ``answer``,
``fill-mask``, ``detect-replaced``, ``classify``, ``rerank``, ``similarity``, ``classify-tokens``,
``models`` and ``health`` call a running one, for quick use from a shell, and ``load``, ``unload`` and ``reload``
change its models while it runs."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bertserve import __version__
from bertserve.app import commands as client_commands

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


def _count(text: str) -> int:
    """A whole number a request field holds (uint32): argparse's usage error, not protobuf's ValueError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {2**32 - 1}, got {value}")
    return value


def _seconds(text: str) -> float:
    """A deadline: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bertserve {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--config", help="YAML config (env BERTSERVE_CONFIG; default: the packaged config)")
    serve.add_argument("--address", help="address to bind (env BERTSERVE_ADDRESS; default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to bind, 0 for any free one (env BERTSERVE_PORT; default 50051)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="env BERTSERVE_LOG_LEVEL")
    serve.add_argument(
        "--processes",
        type=_count_or_auto,
        help="processes sharing the port: a number, or auto to choose from the cores (env BERTSERVE_PROCESSES; "
        "default auto)",
    )
    serve.set_defaults(run=_serve)

    def client_command(name: str, help: str, *, model: bool = True, timeout: float = 60.0) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--target", default=os.environ.get("BERTSERVE_TARGET", "localhost:50051"))
        if model:
            sub.add_argument("--model", default="", help="model name (default: the server's default model)")
        sub.add_argument("--timeout", type=_seconds, default=timeout, help=f"deadline in seconds (default {timeout:g})")
        tls = sub.add_argument_group("TLS and auth")
        tls.add_argument("--tls", action="store_true", help="TLS with the system's CA certificates")
        tls.add_argument("--tls-ca", metavar="FILE", help="TLS, trusting the CA certificate in FILE")
        tls.add_argument("--tls-cert", metavar="FILE", help="client certificate, for mutual TLS")
        tls.add_argument("--tls-key", metavar="FILE", help="the client certificate's key")
        tls.add_argument("--token", help="bearer token (default: env BERTSERVE_TOKEN)")
        return sub

    embed = client_command("embed", help="embed texts and print the vectors as JSON")
    embed.add_argument("texts", nargs="+")
    embed.add_argument("--pooling", choices=("cls", "mean", "pooler"))
    embed.add_argument("--normalize", action="store_true")
    embed.add_argument("--truncate", action="store_true")
    embed.set_defaults(run=client_commands.embed)

    tokenize = client_command("tokenize", help="tokenize texts and print tokens, ids and offsets as JSON")
    tokenize.add_argument("texts", nargs="+")
    tokenize.add_argument("--pair", action="append", help="second segment, once per text")
    tokenize.add_argument("--no-special-tokens", action="store_true")
    tokenize.add_argument("--truncate", action="store_true", help="cut to --max-length (default: the model's limit)")
    tokenize.add_argument("--max-length", type=_count, help="with --truncate: the most tokens, special tokens included")
    tokenize.set_defaults(run=client_commands.tokenize)

    answer = client_command("answer", help="answer a question from a context and print the answers as JSON")
    answer.add_argument("--question", required=True)
    source = answer.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the context text")
    source.add_argument("--context-file", type=Path, help="a UTF-8 file holding the context ('-' for stdin)")
    answer.add_argument("--top-k", type=_count)
    answer.add_argument("--handle-impossible-answer", action="store_true", default=None)
    answer.add_argument("--max-seq-len", type=_count)
    answer.add_argument("--doc-stride", type=_count)
    answer.add_argument(
        "--no-merge-same-text",
        dest="merge_same_text",
        action="store_false",
        default=None,
        help="list each distinct span once instead of adding up answers with the same text",
    )
    answer.set_defaults(run=client_commands.answer)

    classify = client_command("classify", help="classify texts (or text pairs) and print their labels as JSON")
    classify.add_argument("texts", nargs="+")
    classify.add_argument("--pair", action="append", help="second segment, once per text")
    classify.add_argument("--top-k", type=_count, help="labels per text (default 1; 0 for all)")
    classify.add_argument(
        "--function", choices=("softmax", "sigmoid", "none"), help="logits to scores (default: as the model says)"
    )
    classify.add_argument("--truncate", action="store_true")
    classify.set_defaults(run=client_commands.classify)

    rerank = client_command("rerank", help="score documents against a query and print them, ranked, as JSON")
    rerank.add_argument("--query", required=True)
    rerank.add_argument("documents", nargs="+")
    rerank.add_argument("--truncate", action="store_true", help="cut (query, document) pairs over the model's limit")
    rerank.add_argument("--raw-scores", action="store_true", help="the logits instead of their sigmoid")
    rerank.set_defaults(run=client_commands.rerank)

    similarity = client_command(
        "similarity", help="score sentences against a source sentence and print the scores as JSON"
    )
    similarity.add_argument("--source", required=True, help="the sentence the others are compared with")
    similarity.add_argument("sentences", nargs="+")
    similarity.add_argument("--truncate", action="store_true", help="cut sentences over the model's limit")
    similarity.set_defaults(run=client_commands.similarity)

    ner = client_command("classify-tokens", help="find the entities of texts (NER) and print them as JSON")
    ner.add_argument("texts", nargs="+")
    ner.add_argument(
        "--aggregation",
        choices=("none", "simple", "first", "average", "max"),
        default="none",
        help="how tokens become entities, as transformers' aggregation_strategy (default none: one per token)",
    )
    labels = ner.add_mutually_exclusive_group()
    labels.add_argument(
        "--ignore-label", action="append", metavar="LABEL", help="leave this label out, once per label (default: O)"
    )
    labels.add_argument("--all-labels", action="store_true", help="leave no label out, O included")
    ner.add_argument("--truncate", action="store_true")
    ner.set_defaults(run=client_commands.classify_tokens)

    fill = client_command("fill-mask", help="predict the tokens at each [MASK] of texts and print them as JSON")
    fill.add_argument("texts", nargs="+", help="texts with [MASK] (or the model's own mask token) in them")
    fill.add_argument("--top-k", type=_count, help="candidates per mask (default 5)")
    # (--target is the server's address, as in every client command)
    fill.add_argument(
        "--candidate",
        dest="targets",
        action="append",
        metavar="TOKEN",
        help="consider only this token (the pipeline's targets), once per token",
    )
    fill.add_argument("--truncate", action="store_true")
    fill.set_defaults(run=client_commands.fill_mask)

    replaced = client_command(
        "detect-replaced", help="the probability that each token was replaced (ELECTRA's discriminator), as JSON"
    )
    replaced.add_argument("texts", nargs="+")
    replaced.add_argument("--words", action="store_true", help="also each word's probability: its tokens' highest")
    replaced.add_argument("--truncate", action="store_true")
    replaced.set_defaults(run=client_commands.detect_replaced)

    models = client_command("models", help="list the server's models as JSON")
    models.set_defaults(run=client_commands.models)

    entry_help = "the model entry as YAML or JSON, as in the config's models list ('-': read it from stdin)"
    load = client_command("load", help="add a model to the running server, once ready", model=False, timeout=900)
    load.add_argument("entry", help=f"{entry_help}, e.g. '{{name: m, plugin: bert, source: ./m}}'")
    load.set_defaults(run=client_commands.load)

    unload = client_command("unload", help="remove a model once its calls in flight finish", model=False)
    unload.add_argument("name")
    unload.set_defaults(run=client_commands.unload)

    reload = client_command(
        "reload", help="load a model again; the old one serves until the new one is ready", model=False, timeout=900
    )
    reload.add_argument("name")
    reload.add_argument("--entry", help=f"a new entry with the same name: {entry_help}")
    reload.set_defaults(run=client_commands.reload)

    health = client_command(
        "health", help="check grpc.health.v1: exit 0 when SERVING (a container's health check)", model=False, timeout=5
    )
    health.add_argument("--service", default="", help="a model's name, or empty for the whole server (the default)")
    health.set_defaults(run=client_commands.health)
    return parser


def _count_or_auto(text: str) -> int | str:
    """A number stays a number for the schema to judge; auto and anything else go on as text."""
    try:
        return int(text)
    except ValueError:
        return text


def _serve(args: argparse.Namespace) -> int:
    from bertserve.app.config import check_options, load_config
    from bertserve.app.discovery import discover_plugins
    from bertserve.app.front_end_imports import keep_torch_out
    from bertserve.app.process_plan import plan_processes
    from bertserve.errors import ConfigError
    from bertserve.observability.logs import configure_logging
    from bertserve.observability.telemetry import configure_tracing
    from bertserve.runtime.threads import cpu_cores

    try:
        config = load_config(
            args.config,
            overrides={
                "address": args.address,
                "port": args.port,
                "log_level": args.log_level,
                "processes": args.processes,
            },
        )
    except ConfigError as e:
        print(f"bertserve: {e}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    cores = cpu_cores()
    plan = plan_processes(config.processes, config.engine, cores)
    if plan.supervised:
        keep_torch_out()  # the supervisor runs no model: it reads the plugins' options, nothing more
    registry = discover_plugins()
    if config.processes == "auto":
        logging.getLogger("bertserve.app.process_plan").info(
            "processes: auto chose %s for %d cores", plan.describe(), cores
        )
    try:
        check_options(config, registry.plugins)
        if not plan.supervised:  # otherwise each process sets up its own
            configure_tracing()
    except ConfigError as e:
        print(f"bertserve: {e}", file=sys.stderr)
        return 2
    try:
        if plan.supervised:
            from bertserve.app.supervisor import serve_processes

            return serve_processes(config, plan, cores)
        from bertserve.app.server import serve_one_process

        serve_one_process(config, cores, registry)
    except OSError as e:
        print(f"bertserve: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
