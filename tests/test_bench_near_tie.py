"""The bench tells a near-tie divergence (allowed in float16/bfloat16) from a mismatch (a bug).

A crafted tiny model has an exact tie: token b's output row is a copy of token a's, so wherever
a is the target's top token, b ties with it (margin 0). A "tie-flipping" method picks the other
of two tied tokens, as rounding may in float16; a "broken verify" picks the runner-up where the
target is confident. The bench must call the first a near-tie and the second a mismatch.
"""

import mlx.core as mx
import numpy as np

from mlx_specdec import bench as lib
from mlx_specdec.drafters.autoregressive import Autoregressive
from mlx_specdec.generate import Session
from mlx_specdec.prompts import Prompt
from mlx_specdec.sampling import SamplingParams
from mlx_specdec.tokenizer import Tokenizer

from conftest import tiny_config, tiny_model
from tiny_dir import write_model_dir


def _pick_from(choose):
    """A Session whose greedy verify of a one-node tree emits ``choose(logits)`` instead of argmax."""

    class Picking(Session):
        @staticmethod
        def _verify(tree, logits, params, rng, noise, past):
            return [0], choose(np.array(logits[0].astype(mx.float32)))

    return Picking


def flip_ties(logits: np.ndarray) -> int:
    """The other of two tied top tokens (argmax takes the first; which of two equal values
    ``np.argsort`` puts last depends on the CPU's sort kernel, so it is not used here)."""
    best = int(np.argmax(logits))
    tied = np.flatnonzero(logits >= logits[best] - 1e-6)
    others = tied[tied != best]
    return int(others[0]) if len(others) else best


def runner_up_when_confident(logits: np.ndarray) -> int:
    top = np.argsort(logits)[-2:]
    return int(top[0]) if logits[top[1]] - logits[top[0]] > 2.0 else int(np.argmax(logits))  # argmax: ties as ar breaks them


def test_near_tie_and_mismatch_verdicts(tmp_path):
    model = tiny_model("mistral", seed=11, scale=3.0)  # untied output layer
    prompt_ids_model = write_model_dir(tmp_path / "m", tiny_config("mistral"), model)
    tokenizer = Tokenizer(prompt_ids_model)
    prompt = Prompt(1, "chat", ("the cat sat on the mat",))
    params = SamplingParams()

    def rows(runners):
        return list(lib.run([(prompt, m) for m in runners], runners, tokenizer, 12, warmup=False))

    plain = rows({"ar": lib.LoopRunner(Session(model), lib.MarginRecorder(model), params, ())})[0]
    a = plain["tokens"][4]
    # a higher id ar never emits, so argmax (first index) still picks a: ar unchanged; its row is
    # replaced in place (a different matrix shape could round other logits apart through another kernel)
    b = next(t for t in range(a + 1, model.lm_head.weight.shape[0]) if t not in plain["tokens"])
    weight = model.lm_head.weight
    model.lm_head.weight = mx.concatenate([weight[:b], weight[a : a + 1], weight[b + 1 :]])

    runners = {
        "ar": lib.LoopRunner(Session(model), lib.MarginRecorder(model), params, ()),
        "flip": lib.LoopRunner(_pick_from(flip_ties)(model), Autoregressive(), params, ()),
        "broken": lib.LoopRunner(_pick_from(runner_up_when_confident)(model), Autoregressive(), params, ()),
    }
    results = rows(runners)
    ar, flip, broken = results
    assert ar["tokens"] == plain["tokens"] and len(ar["margins"]) == len(ar["tokens"])
    first_a = ar["tokens"].index(a)
    assert ar["margins"][first_a] == 0.0 and min(ar["margins"][:first_a], default=1.0) > 0

    summary = lib.summarize(results, greedy=True, dtype="float16")
    assert flip["divergence"] == "near-tie" and flip["first_mismatch"] == first_a and flip["divergence_margin"] == 0.0
    assert broken["divergence"] == "mismatch" and broken["divergence_margin"] > lib.NEAR_TIE_MARGIN["float16"]
    assert summary["mismatches"] == {"ar": 0, "flip": 0, "broken": 1}
    assert summary["near_ties"] == {"ar": 0, "flip": 1, "broken": 0}
    assert summary["lossless"] is False
    assert lib.summarize([ar, flip], greedy=True, dtype="float16")["lossless"] is True

    strict = lib.summarize(results, greedy=True, dtype="float32")  # float32: every divergence is a bug
    assert strict["mismatches"] == {"ar": 0, "flip": 1, "broken": 1} and strict["near_ties"]["flip"] == 0


def test_seeded_sampling_compares_every_method_without_sampled_drafts():
    """Sampling with one seed: recycle/pld must write ar's text (a divergence is a mismatch);
    draft-model, triforce and peers sample otherwise and are not compared; without a seed nothing is."""
    def row(method, tokens, peer=False):
        return dict(category="c", question_id=1, method=method, peer=peer, tokens=tokens, turn_new_tokens=[len(tokens)])

    rows = [row("ar", [1, 2, 3]), row("recycle", [1, 2, 3]), row("pld", [1, 2, 4]), row("draft-model", [5, 6, 7]),
            row("triforce", [5, 6, 7]), row("mlx-lm", [5, 6, 7], peer=True)]
    lib.check_lossless(rows, greedy=False, dtype="float32", seeded_sampling=True)
    assert [r["matches_ar"] for r in rows] == [None, True, False, None, None, None]
    assert rows[2]["divergence"] == "mismatch" and rows[2]["first_mismatch"] == 2
    lib.check_lossless(rows, greedy=False, dtype="float32")
    assert all(r["matches_ar"] is None for r in rows)
