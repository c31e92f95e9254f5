"""MethodOptions: one declaration gives every command its method flags and a server its checked fields."""

import inspect

import pytest

from mlx_specdec.cli.bench_cmd import bench
from mlx_specdec.cli.chat_cmd import chat
from mlx_specdec.cli.generate_cmd import generate
from mlx_specdec.errors import UserError
from mlx_specdec.method_options import MethodOptions


def test_every_field_is_a_flag_of_every_decoding_command():
    fields = [f.name for f in MethodOptions.fields()]
    assert len(fields) == 19  # 14 + triforce's --budget, --chunk, --sinks, --gamma2, --bottom
    for command in (generate, chat, bench):
        params = inspect.signature(command).parameters
        assert set(fields) <= params.keys() and "method_options" not in params, command.__name__


def test_from_dict_parses_strings_and_json_values():
    o = MethodOptions.from_dict({"window": "auto", "ngram": 3, "guesses": None}, method="lookahead")
    assert (o.window, o.ngram, o.guesses) == ("auto", 3, None)
    assert o.drafter_kwargs("lookahead") == {"window": "auto", "ngram": 3}
    assert MethodOptions.from_dict({"num_draft": "5"}, method="pld").drafter_kwargs("pld") == {"num_draft": 5}
    assert MethodOptions().drafter_kwargs("draft-model") == {"num_draft": 4}


@pytest.mark.parametrize("values, method, message", [
    ({"num_draft": 0}, "pld", "--num-draft must be an integer between 1 and 64, got 0"),
    ({"num_draft": "-2"}, "pld", "--num-draft must be an integer between 0 and 64, got -2"),
    ({"num_draft": 2.5}, "pld", "--num-draft must be an integer"),
    ({"num_draft": True}, "pld", "--num-draft must be an integer"),
    ({"num_draft": "x"}, "pld", "--num-draft must be an integer"),
    ({"ngram": 1}, "lookahead", "--ngram must be an integer >= 2"),
    ({"tree_size": "many"}, "redrafter", "--tree-size must be an integer >= 1 or 'auto'"),
    ({"tree": "bush"}, "redrafter", "--tree must be one of beam, dynamic"),
    ({"draft_model": ""}, "draft-model", "--draft-model must be a non-empty string"),
    ({"beam_width": 2}, "pld", "--beam-width does not apply to --method pld"),
    ({"num_draft": 3}, "ar", "--num-draft does not apply to --method ar"),
    ({"tree": "beam", "tree_depth": 3}, "redrafter", "--tree-depth only applies to --tree dynamic"),
    ({"nope": 1}, None, "unknown method option 'nope'"),
    ({"drafter": "pld=/h"}, "pld", "expected PATH or METHOD=PATH with METHOD one of redrafter, eagle"),
    ({"drafter": "eagle="}, "eagle", "expected PATH or METHOD=PATH"),
    ({"drafter": "eagle=/h"}, "redrafter", "--drafter names a head for eagle, which --method redrafter does not run"),
])
def test_bad_values_are_one_line_user_errors(values, method, message):
    with pytest.raises(UserError) as e:
        MethodOptions.from_dict(values, method=method)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_several_methods_share_one_set_of_options():
    o = MethodOptions.from_dict({"num_draft": 3, "beam_width": 2, "tree_depth": 4})
    o.check("ar", "pld", "redrafter:beam", "redrafter:dynamic")  # bench: each option fits one method
    with pytest.raises(UserError, match="--beam-width does not apply"):
        o.check("ar", "pld")
    assert o.for_method("pld").given() == {"num_draft": 3}
    assert o.for_method("redrafter:beam").drafter_kwargs("redrafter:beam") == {"sources": "pld", "tree": "beam", "lookup": 2, "beam_width": 2}
    assert o.for_method("redrafter:dynamic").drafter_kwargs("redrafter:dynamic") == {"sources": "recycle", "depth": 4, "budget": True}
    with pytest.raises(UserError, match="redrafter:beam contradicts --tree dynamic"):
        MethodOptions(tree="dynamic").check("redrafter:beam")


def test_a_method_qualified_drafter_gives_each_head_method_its_own_head():
    o = MethodOptions.from_dict({"drafter": "eagle=/heads/e3"})
    o.check("ar", "pld", "redrafter", "eagle")  # bench: eagle gets /heads/e3, redrafter its shipped head
    assert o.for_method("eagle").drafter_kwargs("eagle")["head_path"] == "/heads/e3"
    assert "head_path" not in o.for_method("redrafter").drafter_kwargs("redrafter")  # the shipped head
    both = MethodOptions.from_dict({"drafter": "redrafter=/heads/rd,eagle=/heads/e3"})
    assert [both.for_method(m).drafter for m in ("redrafter:beam", "eagle")] == ["/heads/rd", "/heads/e3"]
    assert MethodOptions(drafter="/heads/rd").for_method("redrafter").drafter == "/heads/rd"  # a plain PATH: every head method


def test_the_module_docstring_examples_hold():
    import doctest

    import mlx_specdec.method_options as module

    assert doctest.testmod(module).failed == 0


def test_a_request_dict_gives_a_drafter():
    from mlx_specdec.drafters import make_drafter

    body = {"method": "pld", "num_draft": 3, "messages": [], "temperature": 0.5}
    options = MethodOptions.from_dict({k: v for k, v in body.items() if k in MethodOptions.names()}, method=body["method"])
    assert make_drafter("pld", **options.drafter_kwargs("pld")).num_draft == 3


def test_head_sources_default_and_conflicts():
    assert MethodOptions().drafter_kwargs("eagle") == {"sources": "recycle", "budget": True}
    assert MethodOptions.from_dict({"lookup": 1}).drafter_kwargs("eagle") == {"sources": "pld", "lookup": 1, "budget": True}
    assert MethodOptions.from_dict({"sources": "pld"}).drafter_kwargs("redrafter")["lookup"] == 2
    assert MethodOptions.from_dict({"tree": "beam"}).head_sources("redrafter") == "pld"  # beams keep their chains
    with pytest.raises(UserError, match="--lookup applies to --sources pld"):
        MethodOptions.from_dict({"sources": "recycle", "lookup": 2}, method="redrafter")
    with pytest.raises(UserError, match="--sources recycle needs --tree dynamic"):
        MethodOptions.from_dict({"sources": "recycle", "tree": "beam"}, method="redrafter")
    with pytest.raises(UserError, match="--sources must be one of recycle, pld"):
        MethodOptions.from_dict({"sources": "table"}, method="eagle")
    with pytest.raises(UserError, match="does not apply to --method recycle"):
        MethodOptions.from_dict({"sources": "pld"}, method="recycle")
