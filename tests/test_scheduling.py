"""The batcher's decisions on plain values, no event loop: turns between calls, the round of a
contended pass, the split by length of a lone call, a worker's share, and staggered pass ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertserve.serving.scheduling import Choice, choose_batch, computed_tokens, in_turns, pass_ms, shared_pass


@dataclass(frozen=True)
class Seq:
    request: int
    cost: int
    op: str = "embed"


def _decide(live: list[Seq], **overrides: Any) -> Choice:
    settings: dict[str, Any] = dict(
        last_turn=0,
        idle_workers=1,
        max_batch_size=64,
        max_batch_tokens=16384,
        pass_overhead_tokens=32.0,
        packed=lambda op: False,
        lately_contended=False,
        budget=16384,
    )
    return choose_batch(live, **{**settings, **overrides})


def _choose(live: list[Seq], **overrides: Any) -> list[tuple[int, int]]:
    """The (request, cost) of the sequences the next pass takes."""
    return [(live[i].request, live[i].cost) for i in _decide(live, **overrides).taken]


def test_requests_interleave_from_the_one_whose_turn_it_is() -> None:
    items = [Seq(1, 5), Seq(1, 6), Seq(1, 7), Seq(2, 8), Seq(3, 9), Seq(3, 10)]
    assert [(s.request, s.cost) for s in in_turns(items, lambda s: s.request, 2)] == [
        (2, 8), (3, 9), (1, 5), (3, 10), (1, 6), (1, 7),
    ]  # fmt: skip


def test_the_turn_goes_to_the_next_request_and_a_contended_pass_takes_each_ones_first() -> None:
    live = [Seq(1, 10), Seq(1, 10), Seq(1, 10), Seq(2, 10), Seq(3, 10)]
    choice = _decide(live, last_turn=1, max_batch_size=3)
    assert choice.turn == 2 and choice.contended
    assert [live[i].request for i in choice.taken] == [2, 3, 1]


def test_a_pass_plans_over_one_operation_only() -> None:
    live = [Seq(1, 10, "answer"), Seq(2, 10, "embed"), Seq(3, 12, "answer")]
    assert _choose(live) == [(1, 10), (3, 12)]


def test_a_lone_call_is_split_by_length_and_the_anchors_group_runs_first() -> None:
    # Short and long sequences of one call: padding the short ones to 500 would cost more than a pass.
    live = [Seq(1, 500), Seq(1, 8), Seq(1, 9), Seq(1, 505)]
    assert _choose(live) == [(1, 500), (1, 505)]
    # With almost no fixed cost a pass, even those two are cheaper apart.
    assert _choose(live, pass_overhead_tokens=1.0) == [(1, 500)]
    # Packed passes pay no padding: all that fits goes in one.
    assert len(_choose(live, packed=lambda op: True)) == 4


def test_with_two_idle_workers_a_pass_takes_half_of_a_large_call() -> None:
    live = [Seq(1, 10) for _ in range(32)]
    assert len(_choose(live, idle_workers=2)) == 16
    assert len(_choose(live, idle_workers=1)) == 32


def test_lately_contended_a_lone_call_goes_shortest_first_within_the_budget() -> None:
    live = [Seq(1, 30), Seq(1, 10), Seq(1, 20)]
    # Padded: 10 alone costs 10, with 20 it costs 40, with 30 too 90.
    assert _choose(live, lately_contended=True, budget=40) == [(1, 10), (1, 20)]


def test_the_round_of_a_contended_pass_goes_in_whole_past_the_budget_but_not_past_the_limit() -> None:
    costs = [100, 100, 100, 5]  # three requests' first sequences, then one more
    assert shared_pass(costs, 3, 64, packed=True, limit=1000, budget=150) == [0, 1, 2]
    assert shared_pass(costs, 3, 64, packed=True, limit=250, budget=150) == [0, 1]
    assert shared_pass([10, 10, 10, 10], 2, 64, packed=True, limit=1000, budget=30) == [0, 1, 2]
    assert shared_pass([10, 10, 10], 3, 2, packed=False, limit=1000, budget=1000) == [0, 1]


def test_padded_passes_compute_their_padding() -> None:
    assert computed_tokens([3, 5, 9], packed=True) == 17
    assert computed_tokens([3, 5, 9], packed=False) == 27


def test_the_passes_of_two_workers_are_planned_to_end_apart() -> None:
    assert pass_ms(100.0, 1, [1100.0], now_ms=1000.0) == 100.0
    assert pass_ms(100.0, 2, [], now_ms=1000.0) == 100.0
    # The other worker's pass ends at the full limit: this one ends half a limit before it.
    assert pass_ms(100.0, 2, [1100.0], now_ms=1000.0) == 50.0
    # It ends soon: this one may take the whole limit, which ends more than a step after it.
    assert pass_ms(100.0, 2, [1010.0], now_ms=1000.0) == 100.0
    # It ends at 80: the whole limit would end only 20 after it, and a step after it is past the
    # limit, so this one ends a step before it, at 30.
    assert pass_ms(100.0, 2, [1080.0], now_ms=1000.0) == 30.0


def test_a_draining_server_takes_the_oldest_requests_sequences_first() -> None:
    live = [Seq(2, 10), Seq(3, 10), Seq(1, 10), Seq(1, 10), Seq(2, 10), Seq(1, 10), Seq(3, 10)]
    assert [r for r, _ in _choose(live, last_turn=1, max_batch_size=4, first_come=True)] == [1, 1, 1, 2]
    in_turns_now = [r for r, _ in _choose(live, last_turn=1, max_batch_size=4)]
    assert in_turns_now[:3] == [2, 3, 1]  # what it does while serving: a turn each
    choice = _decide([Seq(5, 10), Seq(5, 10, "answer"), Seq(4, 10, "answer")], first_come=True)
    assert choice.turn == 4 and [c for c in choice.taken] == [2, 1]  # the oldest request's operation
