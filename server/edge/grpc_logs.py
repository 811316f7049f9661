"""grpc's own log records that a caller can provoke, kept to what an operator needs.

grpcio decodes each metadata value as UTF-8 whenever the metadata is read, and logs a value that
is not (``x-junk: \\xff\\xfe``) as an ERROR with a traceback, every time, before falling back to
Latin-1. The call itself is served. A hostile caller could fill the log that way, so those
records become one warning per interval, with a count of the values seen since the last one.

grpcio also logs an ERROR with a traceback when the reply of a unary call cannot be sent because
the call ended as the handler returned (its caller cancelled it, or its deadline passed, before
grpc core marked it closed): a race in grpc's own code, after bertserve's handler is done, and
nothing for an operator to fix. Such a record becomes one line, without the traceback.
"""

from __future__ import annotations

import logging
import re
import threading
import time

__all__ = ["GRPC_LOGGERS", "NotUtf8Metadata", "UnsentReplies", "quiet_grpc_logs"]

log = logging.getLogger("bertserve.edge")

#: Where grpcio logs a value it cannot decode: its Cython core and its pure-Python helpers.
GRPC_LOGGERS = ("grpc._cython.cygrpc", "grpc._common")
_INVALID_ENCODING = "Invalid encoding on %s"


class NotUtf8Metadata(logging.Filter):
    """Drops grpc's "Invalid encoding" records; warns once per interval_s that they happen."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._unreported = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _INVALID_ENCODING:
            return True
        with self._lock:
            self._unreported += 1
            now = time.monotonic()
            if now - self._last < self._interval_s:
                return False
            self._last, seen, self._unreported = now, self._unreported, 0
        log.warning(
            "a call sent metadata that is not UTF-8 (%d value%s since the last such warning); it was read as "
            "Latin-1 and the call served",
            seen,
            "" if seen == 1 else "s",
        )
        return False


_UNSENT = re.compile(r"ExecuteBatchError raised in core by servicer method \[(.*)\]")


class UnsentReplies(logging.Filter):
    """Turns grpc's "ExecuteBatchError raised in core" records, with their tracebacks, into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _UNSENT.fullmatch(str(record.msg))
        if match is None:
            return True
        log.warning(
            "the reply of %s could not be sent: the call had ended (its caller cancelled it or its deadline passed)",
            match.group(1),
        )
        return False


# One of each for all of grpc's loggers: one warning per interval in all.
_FILTERS = (NotUtf8Metadata(), UnsentReplies())


def quiet_grpc_logs() -> None:
    """Install the filters on grpc's loggers (again is a no-op)."""
    for name in GRPC_LOGGERS:
        for each in _FILTERS:
            logging.getLogger(name).addFilter(each)  # a filter already there is not added twice
