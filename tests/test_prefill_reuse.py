"""The same prompt again reuses the last prefill whole (bench runs every method on one prompt):
identical outputs, no tokens prefilled, and a drafter that reads taps still gets them all."""

import numpy as np

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.eagle import Eagle
from mlx_specdec.generate import Session

from conftest import generate_ids, tiny_model
from test_eagle import LAYERS, random_head

PROMPT = [5, 9, 13, 5, 9, 13, 5, 9, 40, 41, 42, 5, 9]


def test_same_prompt_again_prefills_nothing_and_gives_the_same_tokens():
    target = tiny_model(seed=3, scale=3.0)
    session = Session(target)
    first, _ = generate_ids(target, make_drafter("ar"), PROMPT, 20, session=session)
    assert session.last_prefill_tokens == len(PROMPT)
    again, steps = generate_ids(target, make_drafter("pld"), PROMPT, 20, session=session)
    assert session.last_prefill_tokens == 0 and steps[0].prefill
    assert again == first == generate_ids(target, make_drafter("ar"), PROMPT, 20)[0]


def test_a_different_or_longer_prompt_is_not_taken_for_the_last_one():
    target = tiny_model(seed=3, scale=3.0)
    session = Session(target)
    generate_ids(target, make_drafter("ar"), PROMPT, 8, session=session)
    shorter = PROMPT[:-2]
    got, _ = generate_ids(target, make_drafter("ar"), shorter, 8, session=session)
    assert session.last_prefill_tokens == 1  # the cache holds it, but the root needs the last token's logits
    assert got == generate_ids(target, make_drafter("ar"), shorter, 8)[0]
    got, _ = generate_ids(target, make_drafter("ar"), PROMPT, 8, session=session)
    assert session.last_prefill_tokens > 0  # the shorter prompt's call cut the earlier prefill off
    assert got == generate_ids(target, make_drafter("ar"), PROMPT, 8)[0]


def test_a_drafter_with_taps_gets_taps_over_the_whole_prompt():
    target = tiny_model(seed=7, scale=3.0, num_hidden_layers=LAYERS)
    head = random_head(target, Vd=97)
    session = Session(target)
    reference, _ = generate_ids(target, make_drafter("ar"), PROMPT, 30, session=session)
    drafter = Eagle(target, head, topk=3, depth=3, num_nodes=6)
    got, _ = generate_ids(target, drafter, PROMPT, 30, session=session)
    assert session.last_prefill_tokens == len(PROMPT)  # ar's prefill had no taps: read again, with them
    assert got == reference
    fresh = Eagle(target, head, topk=3, depth=3, num_nodes=6)
    generate_ids(target, fresh, PROMPT, 30)
    again = Eagle(target, head, topk=3, depth=3, num_nodes=6)
    got, _ = generate_ids(target, again, PROMPT, 30, session=session)
    assert session.last_prefill_tokens == 0 and got == reference  # now the kept prefill has the taps
    assert again.k.shape == fresh.k.shape and np.allclose(np.array(again.k), np.array(fresh.k), atol=1e-5)
