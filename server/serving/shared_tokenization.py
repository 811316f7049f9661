"""Small calls tokenized together: one job on the tokenizer pool for the texts of every call
waiting, not one job (and two thread hops) a call.

The calls of one model with the same settings (special tokens, length limit) queue here; one job
at a time runs for them, and the calls that arrive while it runs go in the next. A text's
encoding does not depend on the texts tokenized beside it, so each call gets exactly what it
would have got alone. A job holds at most MAX_JOB_TEXTS texts, so that a burst of calls is
spread over several jobs, and other models' jobs get the pool's threads in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bertserve.api import Encoding

__all__ = ["MAX_JOB_TEXTS", "SharedTokenization"]

#: The most texts one job tokenizes.
MAX_JOB_TEXTS = 64

#: Runs one job: (texts, add_special_tokens, max_length) -> their encodings, on the pool.
RunJob = Callable[[list[str], bool, int | None], Awaitable[list[Encoding]]]


_Waiting = tuple[list[str], "asyncio.Future[list[Encoding]]"]  # a call's texts, and its encodings to come


@dataclass
class _Queue:
    waiting: list[_Waiting] = field(default_factory=list)
    running: bool = False


class SharedTokenization:
    """Tokenizes the texts of the calls waiting with the same settings in one job at a time."""

    def __init__(self, run: RunJob) -> None:
        self._run = run
        self._queues: dict[tuple[bool, int | None], _Queue] = {}
        self._draining: set[asyncio.Task[None]] = set()  # held, so that none is collected while it runs
        self.jobs = 0  # jobs run so far (for tests and diagnostics)

    async def tokenize(
        self, texts: Sequence[str], *, add_special_tokens: bool, max_length: int | None
    ) -> list[Encoding]:
        key = (add_special_tokens, max_length)
        queue = self._queues.setdefault(key, _Queue())
        future: asyncio.Future[list[Encoding]] = asyncio.get_running_loop().create_future()
        queue.waiting.append((list(texts), future))
        if not queue.running:
            queue.running = True
            task = asyncio.get_running_loop().create_task(self._drain(key, queue))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await future

    async def _drain(self, key: tuple[bool, int | None], queue: _Queue) -> None:
        """Run jobs while calls wait; the calls that came during one go in the next."""
        try:
            await asyncio.sleep(0)  # the calls that arrive in this turn of the loop join the first job
            while queue.waiting:
                job: list[_Waiting] = []
                count = 0
                while queue.waiting and (not job or count + len(queue.waiting[0][0]) <= MAX_JOB_TEXTS):
                    texts, future = queue.waiting.pop(0)
                    if not future.done():  # a caller that went away is left out
                        job.append((texts, future))
                        count += len(texts)
                if job:
                    await self._job(job, key)
        finally:
            queue.running = False
            if not queue.waiting:
                self._queues.pop(key, None)

    async def _job(self, job: list[_Waiting], key: tuple[bool, int | None]) -> None:
        self.jobs += 1
        try:
            encodings = await self._run([t for texts, _ in job for t in texts], *key)
        except Exception as e:  # a setting every text of the job shares (a max_length with no room, say)
            for _, future in job:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for texts, future in job:
            if not future.done():
                future.set_result(encodings[start : start + len(texts)])
            start += len(texts)
