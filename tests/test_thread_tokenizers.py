"""Each thread tokenizes with its own copy of a tokenizer; the event loop's is made ahead, on a
thread of its own, so that the loop never waits the tens of milliseconds a copy takes."""

from __future__ import annotations

import threading
import time
from typing import Any

from bertserve.runtime.thread_tokenizers import ThreadTokenizers


class _Tokenizer:
    """Records the thread each of its copies was made on."""

    def __init__(self, made_on: list[int]) -> None:
        self.made_on = made_on

    def __deepcopy__(self, memo: dict[int, Any]) -> _Tokenizer:
        self.made_on.append(threading.get_ident())
        return _Tokenizer(self.made_on)


def _on_a_thread(work: Any) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append((threading.get_ident(), work())))
    thread.start()
    thread.join(10)
    return out[0]


def test_the_thread_that_made_it_keeps_the_original_and_another_gets_a_copy() -> None:
    made_on: list[int] = []
    tokenizers = ThreadTokenizers(_Tokenizer(made_on))
    assert tokenizers.get() is tokenizers.shared and tokenizers.ready_here()
    ident, theirs = _on_a_thread(tokenizers.get)
    assert theirs is not tokenizers.shared
    assert made_on == [ident]  # made on its first use, by the thread itself


def test_a_copy_asked_for_ahead_is_made_off_the_asking_thread() -> None:
    made_on: list[int] = []
    tokenizers = ThreadTokenizers(_Tokenizer(made_on))

    def ask_ahead() -> tuple[bool, Any]:
        first = tokenizers.ready_here()
        deadline = time.monotonic() + 10
        while not tokenizers.ready_here() and time.monotonic() < deadline:
            time.sleep(0.01)
        return first, tokenizers.get()

    ident, (first, theirs) = _on_a_thread(ask_ahead)
    assert first is False  # not there yet: the caller tokenizes elsewhere meanwhile
    assert theirs is not tokenizers.shared
    assert len(made_on) == 1 and made_on[0] != ident  # made once, and not by the asking thread
