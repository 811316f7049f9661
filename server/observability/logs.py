"""Logging set-up of a server process: text lines, or one JSON object per line (python-json-logger),
as ``server.log_format`` says. Extra fields of a record (the access log's) become JSON fields."""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "shown"]

#: The most characters of a caller's text that a log line shows.
SHOWN_CHARS = 128
_PLAIN = re.compile(r"[\x21-\x7e]*")


def configure_logging(level: str, log_format: str, *, process: str = "") -> None:
    """process: "[i/n] " in a server of several processes, so that lines tell them apart."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        fields = "%(asctime)s %(levelname)s %(name)s %(message)s" + (" %(processName)s" if process else "")
        handler.setFormatter(
            JsonFormatter(
                fields,
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "processName": "process"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {process}%(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # What no format here shows is not gathered for every record (the logging docs' optimization
    # knobs): the access log writes a record for every call.
    logging._srcfile = None  # type: ignore[attr-defined]  # caller's file, function and line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = bool(process) and log_format == "json"  # the JSON lines' process name


def shown(text: str) -> str:
    """A text a caller chose (a model name), as a log line may show it: as it is when it is short
    and plain ASCII without spaces; otherwise quoted with its other characters escaped (a newline
    would forge a line of its own) and cut to SHOWN_CHARS."""
    cut = text[:SHOWN_CHARS]
    more = "..." if len(text) > SHOWN_CHARS else ""
    if _PLAIN.fullmatch(cut):
        return cut + more
    return ascii(cut) + more
