"""TriForce on the real default model (float32): greedy output equals ar's on long documents."""

import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.triforce import make_triforce
from mlx_specdec.generate import Session

from conftest import generate_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default():
    from mlx_specdec.loader import load
    from mlx_specdec.store import default_model_dir

    return load(default_model_dir(), "float32")


def _prompts(loaded, context, n):
    from mlx_specdec.long_context import cut_to_context, default_longctx_file
    from mlx_specdec.prompts import read_prompts, select

    try:
        prompts = select(read_prompts([default_longctx_file()]), [], n)
    except Exception:
        pytest.skip("../shared/data/longctx is not beside the checkout")
    return [loaded.tokenizer.chat_ids([{"role": "user", "content": cut_to_context(p, loaded.tokenizer, context, 32).turns[0]}])
            for p in prompts]


def _shallow(model, layers):
    """The target's first ``layers`` layers (and its embedding, norm and head) as a model."""
    import json

    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_specdec.models import build_model
    from mlx_specdec.store import default_model_dir

    config = json.loads((default_model_dir() / "config.json").read_text())
    shallow = build_model(dict(config, num_hidden_layers=layers))
    ours = dict(tree_flatten(model.parameters()))
    shallow.update(tree_unflatten([(k, ours[k]) for k, _ in tree_flatten(shallow.parameters())]))
    return shallow


@pytest.mark.parametrize("document", [0, 1])
def test_triforce_equals_ar_on_long_documents(default, document):
    """A document cut to 1,200 tokens (budget 384): pld and a draft model (the target's first 10
    layers over a StreamingLLM cache) at the bottom; one prefill, shared by the three runs."""
    drafters = {bottom: make_triforce(default.model, draft=_shallow(default.model, 10) if bottom == "draft-model" else None,
                                      kv_budget=384, window=64, gamma2=5, num_draft=3) for bottom in ("pld", "draft-model")}
    middle_accepted = dict.fromkeys(drafters, 0)
    for ids in _prompts(default, 1200, 2)[document : document + 1]:
        session = Session(default.model)  # shared: later runs reuse the prompt's prefill
        expected, _ = generate_ids(default.model, make_drafter("ar"), ids, 32, eos=default.tokenizer.eos_ids, session=session)
        for bottom, drafter in drafters.items():
            got, steps = generate_ids(default.model, drafter, ids, 32, eos=default.tokenizer.eos_ids, session=session)
            assert got == expected, bottom
            assert sum(s.accepted for s in steps) > 0  # the full target accepts the middle's drafts
            middle_accepted[bottom] += sum(s.inner[2] for s in steps if s.inner)
    assert middle_accepted["draft-model"] > 0
