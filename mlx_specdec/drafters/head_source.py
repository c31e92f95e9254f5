"""A trained head (ReDrafter, EAGLE-3) inside ``recycle``'s merged tree: when it runs, and how it is built.

The head's search costs a fraction of a forward on a CPU (3 x 3 with the shipped ReDrafter head:
~7-13 ms against a ~65 ms forward), so it does not run on every step. :class:`HeadArm` keeps the
running tokens per second of whole steps (draft, forward, commit) with the head and without it,
apart for steps where a copy is in progress (the context chains alone often do best there), and
picks the faster; every ``HEAD_EXPLORE``-th step takes the other one so both stay current.

Example: measured 20 tok/s with the head and 25 without (not copying): steps 1-7 skip the head,
step 8 runs it; a first step with no measurement runs it, the next one skips it.
"""

from __future__ import annotations

HEAD_EXPLORE = 8  # every 8th step with a head tries the arm (head or none) that measures slower
HEAD_RATE_WEIGHT = 0.2  # weight of the newest step in the running tokens/s per arm


class HeadArm:
    def __init__(self):
        self.rate: dict[tuple[bool, bool], float] = {}  # (copy in progress, head ran) -> tokens/s, running
        self.steps = 0

    def choose(self, hot: bool) -> bool:
        """Run the head this step (``hot``: a copy is in progress)?"""
        self.steps += 1
        with_, without = self.rate.get((hot, True)), self.rate.get((hot, False))
        if with_ is None or without is None:
            return with_ is None
        best = with_ >= without
        return (not best) if self.steps % HEAD_EXPLORE == 0 else best

    def observe(self, hot: bool, ran: bool, tokens: int, seconds: float) -> None:
        key, rate = (hot, ran), tokens / max(seconds, 1e-9)
        old = self.rate.get(key)
        self.rate[key] = rate if old is None else (1 - HEAD_RATE_WEIGHT) * old + HEAD_RATE_WEIGHT * rate


def with_head(target, make_head, budget, topk: int = 3, depth: int = 3, num_nodes: int | None = None):
    """``recycle`` with a trained head as its third source. ``make_head(topk=, depth=)`` builds the
    head's drafter (no budget, no lookup: the merged tree has both); the default search, top-3 to
    depth 3, measured fastest of 2-4 x 3-5 with the shipped head (README). ``budget`` (True: the
    device's cost table) or ``num_nodes`` sizes the merged tree."""
    from .recycle import make_recycle

    return make_recycle(target, budget=budget if num_nodes is None else None, num_nodes=num_nodes,
                        head=make_head(topk=topk, depth=depth))
