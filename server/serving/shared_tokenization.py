"""Calls tokenized together: one job on the tokenizer pool for the texts of every call waiting,
not one job (and two thread hops) a call.

A call's texts come in slices of at most SLICE_TEXTS (see ModelHost.tokenize). Slices of one
model with the same settings (pairs or not, special tokens, length limit) queue here; one job at
a time runs for them, and the slices that arrive while it runs go in the next. A text's encoding
does not depend on the texts tokenized beside it, so each call gets exactly what it would have got
alone. A job holds at most MAX_JOB_TEXTS texts, so that a burst is spread over several jobs, and a
large call, which sends its next slice only once the last is back, takes turns with the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bertserve.api import Encoding

__all__ = ["MAX_JOB_TEXTS", "SLICE_TEXTS", "SharedTokenization"]

#: The most texts of one call a job takes at once.
SLICE_TEXTS = 16
#: The most texts one job tokenizes.
MAX_JOB_TEXTS = 64

#: Runs one job: (texts, pairs or None, add_special_tokens, max_length) -> their encodings, on the pool.
RunJob = Callable[[list[str], list[str] | None, bool, int | None], Awaitable[list[Encoding]]]
_Key = tuple[bool, bool, int | None]  # (with pairs, add_special_tokens, max_length)


@dataclass
class _Slice:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future[list[Encoding]]


@dataclass
class _Queue:
    waiting: deque[_Slice] = field(default_factory=deque)
    running: bool = False


class SharedTokenization:
    """Tokenizes the slices waiting with the same settings in one job at a time."""

    def __init__(self, run: RunJob) -> None:
        self._run = run
        self._queues: dict[_Key, _Queue] = {}
        self._draining: set[asyncio.Task[None]] = set()  # held, so that none is collected while it runs
        self.jobs = 0  # jobs run so far (for tests and diagnostics)

    async def tokenize(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        *,
        add_special_tokens: bool,
        max_length: int | None,
    ) -> list[Encoding]:
        """One slice's encodings (at most SLICE_TEXTS texts), from the next job."""
        loop = asyncio.get_running_loop()
        key = (pairs is not None, add_special_tokens, max_length)
        queue = self._queues.setdefault(key, _Queue())
        future: asyncio.Future[list[Encoding]] = loop.create_future()
        queue.waiting.append(_Slice(list(texts), list(pairs) if pairs is not None else None, future))
        if not queue.running:
            queue.running = True
            task = loop.create_task(self._drain(key, queue))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await future

    async def _drain(self, key: _Key, queue: _Queue) -> None:
        """Run jobs while slices wait; the slices that came during one go in the next."""
        job: list[_Slice] = []
        try:
            await asyncio.sleep(0)  # the calls that arrive in this turn of the loop join the first job
            while queue.waiting:
                job, count = [], 0
                while queue.waiting and (not job or count + len(queue.waiting[0].texts) <= MAX_JOB_TEXTS):
                    part = queue.waiting.popleft()
                    if not part.future.done():  # a caller that went away is left out
                        job.append(part)
                        count += len(part.texts)
                if job:
                    await self._job(job, key)
        except BaseException as e:  # the loop is closing: no slice is left waiting
            for part in [*job, *queue.waiting]:
                if not part.future.done():
                    part.future.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            queue.waiting.clear()
            raise
        finally:
            queue.running = False
            if not queue.waiting:
                self._queues.pop(key, None)

    async def _job(self, job: list[_Slice], key: _Key) -> None:
        self.jobs += 1
        texts = [t for part in job for t in part.texts]
        pairs = [p for part in job for p in part.pairs or ()] if key[0] else None
        try:
            encodings = await self._run(texts, pairs, key[1], key[2])
        except Exception as e:  # a setting every text of the job shares (a max_length with no room, say)
            for part in job:
                if not part.future.done():
                    part.future.set_exception(e)
            return
        start = 0
        for part in job:
            if not part.future.done():
                part.future.set_result(encodings[start : start + len(part.texts)])
            start += len(part.texts)
