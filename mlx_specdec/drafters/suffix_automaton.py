"""A suffix automaton over a growing token history: the longest earlier match of its suffix.

Extended one token at a time (Blumer et al.'s online construction, O(1) amortised per token).
After each token, ``match_length`` is the length of the longest suffix of the history that also
occurred earlier, and :meth:`continuations` gives what followed that earlier match: one chain per
distinct next token, ranked by how often it followed (then by recency), each copied from the most
recent earlier occurrence. Prompt lookup's "find the last n-gram" is the special case of a fixed n.

Each state holds ``length`` (its longest string), ``link`` (suffix link), ``next`` (token ->
state), ``count`` (occurrences = size of its end-position set) and ``last`` (its most recent end
position). Adding position i updates count and the end positions of every state on
the suffix-link path from the new state; that walk is capped at ``MAX_WALK`` states, so counts and
end positions of states deeper than that (very short, very frequent strings) may lag. Matches
and continuations stay exact: the match state is the new state's link (the longest suffix that
occurs twice), which the walk always reaches first.

Worked example, history ``[1, 2, 3, 1, 2, 3, 1, 2, 4, 1, 2]``::

    match_length = 2                    # "1 2" occurred before (three times)
    continuations(4, 2) = [[3, 1, 2, 4],  # 3 followed "1 2" twice (copied from the latest, at 5)
                           [4, 1, 2]]     # 4 followed it once

(see tests/test_suffix_automaton.py for this and other hand-worked cases).
"""

from __future__ import annotations

MAX_WALK = 32


class SuffixAutomaton:
    def __init__(self, tokens=()):
        self.history: list[int] = []
        self.length = [0]
        self.link = [-1]
        self.next: list[dict[int, int]] = [{}]
        self.count = [0]
        self.last = [-1]  # most recent end position of each state's strings
        self.tail = 0  # state of the whole history
        self.extend_all(tokens)

    @property
    def num_states(self) -> int:
        return len(self.length)

    def _new_state(self, length: int, link: int, nxt: dict, count: int, last: int) -> int:
        self.length.append(length)
        self.link.append(link)
        self.next.append(nxt)
        self.count.append(count)
        self.last.append(last)
        return len(self.length) - 1

    def extend_all(self, tokens) -> None:
        for t in tokens:
            self.extend(int(t))

    def extend(self, token: int) -> None:
        """Append one token (the standard online construction, then the end-position walk)."""
        i = len(self.history)
        self.history.append(token)
        cur = self._new_state(self.length[self.tail] + 1, 0, {}, 0, -1)
        p = self.tail
        while p != -1 and token not in self.next[p]:
            self.next[p][token] = cur
            p = self.link[p]
        if p != -1:
            q = self.next[p][token]
            if self.length[p] + 1 == self.length[q]:
                self.link[cur] = q
            else:
                clone = self._new_state(self.length[p] + 1, self.link[q], dict(self.next[q]), self.count[q], self.last[q])
                while p != -1 and self.next[p].get(token) == q:
                    self.next[p][token] = clone
                    p = self.link[p]
                self.link[q] = self.link[cur] = clone
        self.tail = cur
        s, steps = cur, 0
        while s > 0 and steps < MAX_WALK:  # every state on this path gains end position i
            self.count[s] += 1
            self.last[s] = i
            s, steps = self.link[s], steps + 1

    @property
    def match_length(self) -> int:
        """Length of the longest suffix of the history that also ends at an earlier position."""
        return self.length[self.link[self.tail]] if self.tail else 0

    def continuations(self, max_len: int, max_branches: int = 1) -> list[list[int]]:
        """Up to ``max_branches`` chains of at most ``max_len`` tokens that followed earlier
        occurrences of the longest matched suffix, one per distinct next token, the most frequent
        first (ties: the most recent first). Empty when nothing matched."""
        state = self.link[self.tail] if self.tail else 0
        if state <= 0 or max_len <= 0:
            return []
        ranked = []
        for child in self.next[state].values():  # child's latest end = where its next token sits
            ranked.append((-self.count[child], -self.last[child], self.last[child]))
        ranked.sort()
        out = []
        for _, _, start in ranked[:max_branches]:
            out.append(self.history[start : start + max_len])
        return out
