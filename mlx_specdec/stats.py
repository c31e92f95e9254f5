"""Per-run statistics from the loop's steps: tau, acceptance by depth, tokens/s, time split."""

from __future__ import annotations

from dataclasses import dataclass, field

from .generate import Step


@dataclass
class RunStats:
    new_tokens: int = 0  # emitted tokens (EOS not included)
    produced: int = 0  # tokens the target produced: emitted + a final EOS
    target_forwards: int = 0
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_tokens: int = 0  # tokens emitted by decode steps (the prefill's first token excluded)
    draft_s: float = 0.0
    verify_s: float = 0.0
    bookkeeping_s: float = 0.0
    proposed: int = 0
    accepted: int = 0
    forward_tokens: int = 0  # tokens fed to the target in decode steps (tree + auxiliary)
    proposed_by_depth: list[int] = field(default_factory=list)  # steps whose tree reached depth d+1
    accepted_by_depth: list[int] = field(default_factory=list)  # steps that accepted >= d+1 tokens
    inner: list[int] | None = None  # a drafter's middle level (TriForce): forwards, proposed, accepted

    def add(self, step: Step) -> None:
        self.new_tokens += len(step.tokens)
        self.produced += len(step.tokens) + (step.finish == "eos")
        self.target_forwards += 1
        if step.prefill:
            self.prefill_s += step.seconds
            return
        self.decode_tokens += len(step.tokens)
        self.draft_s += step.draft_s
        self.verify_s += step.verify_s
        self.bookkeeping_s += step.bookkeeping_s
        self.proposed += step.proposed
        self.accepted += step.accepted
        self.forward_tokens += step.forward_tokens
        if step.inner is not None:
            self.inner = [a + b for a, b in zip(self.inner or [0, 0, 0], step.inner)]
        depth = max(step.max_depth, step.accepted)
        grow = depth - len(self.proposed_by_depth)
        if grow > 0:
            self.proposed_by_depth += [0] * grow
            self.accepted_by_depth += [0] * grow
        for d in range(step.max_depth):
            self.proposed_by_depth[d] += 1
        for d in range(step.accepted):
            self.accepted_by_depth[d] += 1

    @property
    def decode_s(self) -> float:
        return self.draft_s + self.verify_s + self.bookkeeping_s

    @property
    def tau(self) -> float:
        """Tokens produced per target forward (the prefill's forward and its token, and a final
        EOS, included: plain decoding has tau = 1 exactly)."""
        return self.produced / self.target_forwards if self.target_forwards else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def acceptance_by_depth(self) -> list[float]:
        """Share of steps that accepted a token at depth d among those that drafted depth d."""
        return [a / p if p else 0.0 for a, p in zip(self.accepted_by_depth, self.proposed_by_depth)]

    @property
    def middle(self) -> dict | None:
        """The middle level's forwards, acceptance (accepted / proposed) and tokens per forward."""
        if self.inner is None:
            return None
        forwards, proposed, accepted = self.inner
        return dict(forwards=forwards, proposed=proposed, accepted=accepted,
                    acceptance=round(accepted / proposed, 4) if proposed else 0.0,
                    tau=round((accepted + forwards) / forwards, 4) if forwards else 0.0)

    def to_dict(self) -> dict:
        return {
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "tau": round(self.tau, 4),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "prefill_tokens": self.prefill_tokens,
            "prefill_s": round(self.prefill_s, 4),
            "decode_s": round(self.decode_s, 4),
            "draft_s": round(self.draft_s, 4),
            "verify_s": round(self.verify_s, 4),
            "bookkeeping_s": round(self.bookkeeping_s, 4),
            "proposed": self.proposed,
            "accepted": self.accepted,
            "forward_tokens": self.forward_tokens,
            "acceptance_by_depth": [round(a, 4) for a in self.acceptance_by_depth],
            **({"middle": self.middle} if self.inner is not None else {}),
        }
