"""How to split pending sequences into forward passes: few passes, little padding.

A pass over n sequences padded to width w costs about ``overhead + n * w`` token-times: a fixed
part (dispatch, thread sync, kernel launches) and a part that grows with the padded tokens. With
the sequences sorted by length, the cheapest split into contiguous groups is found by dynamic
programming. The overhead is a per-model setting (``pass_overhead_tokens``): small on CPUs, where
padding costs as much as real tokens; large on GPUs, where a pass's fixed cost dominates.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["plan_groups"]


def plan_groups(
    lengths: Sequence[int], *, max_batch_size: int, max_batch_tokens: int, overhead_tokens: float
) -> list[list[int]]:
    """Split sequences into groups that minimise sum(overhead + count * longest).

    Returns groups of indices into lengths, each sorted by length, shortest group first. A group
    holds at most max_batch_size sequences and count * longest <= max_batch_tokens, except that a
    single sequence longer than the budget still gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[i]: cheapest cost of the first i sorted sequences
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        width = sorted_lengths[i - 1]  # the longest of any group ending at i
        for j in range(i - 1, max(-1, i - 1 - max_batch_size), -1):
            count = i - j
            if count > 1 and count * width > max_batch_tokens:
                break
            cost = best[j] + overhead_tokens + count * width
            if cost < best[i]:
                best[i], cut[i] = cost, j
    groups = []
    i = n
    while i > 0:
        groups.append(order[cut[i] : i])
        i = cut[i]
    return groups[::-1]
