"""grpc's own records that a caller's timing provokes: a reply that could not be sent because the
call had just ended is one line, without grpc's traceback. The record is made as grpcio makes it
(its logger, its message, the exception it was handling): the race itself cannot be provoked on
demand, and the soak in tests/test_cancellation.py meets it by chance."""

from __future__ import annotations

import logging

import pytest

from bertserve.edge.grpc_logs import quiet_grpc_logs

GRPC = logging.getLogger("grpc._cython.cygrpc")


def test_a_reply_that_could_not_be_sent_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    quiet_grpc_logs()
    caplog.set_level(logging.INFO)
    try:
        raise RuntimeError('Failed "execute_batch": (SendMessageOperation,)')
    except RuntimeError:
        GRPC.exception("ExecuteBatchError raised in core by servicer method [/bertserve.v1.EncoderService/Rerank]")
    [record] = caplog.records
    assert (record.name, record.levelno, record.exc_info) == ("bertserve.edge", logging.WARNING, None)
    assert record.getMessage() == (
        "the reply of /bertserve.v1.EncoderService/Rerank could not be sent: the call had ended "
        "(its caller cancelled it or its deadline passed)"
    )


def test_other_grpc_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    quiet_grpc_logs()
    caplog.set_level(logging.INFO)
    try:
        raise RuntimeError("something else")
    except RuntimeError:
        GRPC.exception("Unexpected [RuntimeError] raised by servicer method [/bertserve.v1.EncoderService/Embed]")
    [record] = caplog.records
    assert record.name == "grpc._cython.cygrpc" and record.levelno == logging.ERROR
    assert record.exc_info is not None
