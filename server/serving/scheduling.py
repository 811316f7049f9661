"""The batcher's decisions, as pure functions: which queued sequences the next pass takes, and how
long a pass may compute. No asyncio, no clocks: the batcher passes the time and what it measured,
so every rule here is testable on plain values (see bertserve.serving.batcher for the loop).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bertserve.serving.packing import plan_groups

__all__ = ["Choice", "Queued", "choose_batch", "computed_tokens", "in_turns", "pass_ms", "shared_pass"]

# A pass overhead so large that the planner never splits a batch that fits the limits.
_FILL_PASSES = 1e9


class Queued(Protocol):
    """A queued sequence as the scheduler sees it."""

    @property
    def op(self) -> Hashable: ...
    @property
    def request(self) -> int: ...  # which call it came with; calls are numbered as they come
    @property
    def cost(self) -> int: ...  # its tokens


S = TypeVar("S", bound=Queued)


@dataclass(frozen=True)
class Choice:
    """What choose_batch decided: the indices into the live sequences, the request whose turn it
    was, and whether calls contended for this pass."""

    taken: list[int]
    turn: int
    contended: bool


def choose_batch(
    live: Sequence[S],
    *,
    last_turn: int,
    idle_workers: int,
    max_batch_size: int,
    max_batch_tokens: int,
    pass_overhead_tokens: float,
    packed: Callable[[Hashable], bool],
    lately_contended: bool,
    budget: int,
    first_come: bool = False,
) -> Choice:
    """The next pass: one sequence of the request whose turn it is, and the sequences that plan
    well with it, taken in turns from every request of its operation.

    Requests take turns in the order they came: a small call queued behind a large one goes in one
    of the next passes, and a large call is spread over passes between other work. With several
    workers idle, the pass takes only its share of the pending work, so that a large request runs
    on all of them rather than on one. budget: the tokens a contended pass may compute.

    first_come: the server drains, and what counts is how many calls end within the grace period:
    the oldest request's sequences go first, then the next request's, and passes are full.
    """
    if first_come:
        turn = min(s.request for s in live)
    else:
        turn = min((s.request for s in live if s.request > last_turn), default=live[0].request)
    anchor = next(s for s in live if s.request == turn)
    # Plan over the anchor's operation only, the requests interleaved from its own on (or one
    # after another, first come), and over a bounded look-ahead.
    same_op = [i for i, s in enumerate(live) if s.op == anchor.op]
    if first_come:
        ordered = sorted(same_op, key=lambda i: live[i].request)
    else:
        ordered = in_turns(same_op, lambda i: live[i].request, turn)
    candidates = ordered[: 4 * max_batch_size]
    share = -(-len(candidates) // max(1, idle_workers))
    size = min(max_batch_size, share)
    is_packed = packed(anchor.op)
    costs = [live[i].cost for i in candidates]
    requests = len({live[i].request for i in candidates})  # candidates come in turns: one round of each first
    contended = requests > 1
    if first_come:  # full passes, in the order the calls came
        picked = shared_pass(costs, 1, size, packed=is_packed, limit=max_batch_tokens, budget=max_batch_tokens)
    elif contended:
        picked = shared_pass(costs, requests, size, packed=is_packed, limit=max_batch_tokens, budget=budget)
    elif lately_contended:
        # One request waits, but others came lately: the next one should not wait long for this
        # pass either. Shortest first, so that a padded pass pads little.
        order = sorted(range(len(candidates)), key=costs.__getitem__)
        chosen = shared_pass(
            [costs[k] for k in order], 1, size, packed=is_packed, limit=max_batch_tokens, budget=budget
        )
        picked = [order[k] for k in chosen]
    else:
        groups = plan_groups(
            costs,
            max_batch_size=size,
            max_batch_tokens=max_batch_tokens,
            # Packed passes compute no padding: one pass takes all that fits.
            overhead_tokens=_FILL_PASSES if is_packed else pass_overhead_tokens,
        )
        # The anchor's group runs first: the plan cuts padding, the turns keep it fair.
        picked = next(g for g in groups if 0 in g)
    return Choice([candidates[k] for k in picked], turn, contended)


def shared_pass(costs: Sequence[int], in_round: int, size: int, *, packed: bool, limit: int, budget: int) -> list[int]:
    """A pass while calls contend, over candidates in turns: the first in_round of them (one of each
    waiting request) go in whole within the batch limits, then more while they fit within budget,
    so that a call that comes next waits little for this pass to end. A call left out of the round
    would wait for a later pass anyway, and a fuller pass computes more per second. A packed pass
    costs its tokens; a padded one, count x longest. Returns the indices taken, in order."""
    taken: list[int] = []
    longest = total = 0
    for k, cost in enumerate(costs):
        if len(taken) == size:
            break
        width = max(longest, cost)
        pass_cost = total + cost if packed else width * (len(taken) + 1)
        if taken and pass_cost > (limit if k < in_round else budget):
            continue
        taken.append(k)
        longest, total = width, total + cost
    return taken


def computed_tokens(costs: Sequence[int], *, packed: bool) -> int:
    """The tokens a pass computes: a padded pass computes its padding too."""
    return sum(costs) if packed else len(costs) * max(costs)


def pass_ms(limit: float, workers: int, ends_ms: Sequence[float], now_ms: float) -> float:
    """How long the next pass may compute while calls contend: limit (max_pass_ms), or less, so
    that the passes of several workers end one after another, limit / workers apart, rather than
    together. A call that comes in then waits that long for a worker to free up, not a whole pass.
    Passes fall into step at the start and by chance; one shorter pass puts them out again.
    ends_ms: when the passes in flight should end."""
    if workers < 2 or not ends_ms:
        return limit
    step = limit / workers
    earliest, latest = now_ms + step / 2, now_ms + limit

    def apart(t: float) -> float:
        return min(step, *(abs(t - end) for end in ends_ms))

    # The longest pass whose end is a step from every other end, or else the one that comes closest.
    candidates = [latest, *(end + k * step for end in ends_ms for k in (-1, 1))]
    best = max((t for t in candidates if earliest <= t <= latest), key=lambda t: (apart(t), t), default=latest)
    return best - now_ms


T = TypeVar("T")


def in_turns(items: Sequence[T], request_of: Callable[[T], int], first: int) -> list[T]:
    """The items interleaved by request: the first of each request (from request `first` on, then
    the earlier ones), then the second of each, and so on."""
    by_request: dict[int, list[T]] = {}
    for item in items:
        by_request.setdefault(request_of(item), []).append(item)
    order = sorted(by_request, key=lambda r: (r < first, r))
    queues = [by_request[r] for r in order]
    return [q[k] for k in range(max(len(q) for q in queues)) for q in queues if k < len(q)]
