"""Made-up request ids: 16 hex digits, each its own, in every process."""

from __future__ import annotations

import os
import random
import re

from bertserve.observability import request_ids


def test_ids_are_sixteen_hex_digits_and_do_not_repeat() -> None:
    ids = [request_ids.new() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", each) for each in ids)
    assert len(set(ids)) == len(ids)


def test_a_seed_set_by_other_code_does_not_make_ids_repeat() -> None:
    random.seed(1234)
    first = request_ids.new()
    random.seed(1234)
    assert request_ids.new() != first


def test_a_forked_process_makes_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, then out at once (no pytest teardown here)
        os.close(read)
        os.write(write, " ".join(request_ids.new() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    parents = {request_ids.new() for _ in range(8)}
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(child, 0)
    assert len(childs) == 8 and not parents & childs
