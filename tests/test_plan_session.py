"""`sdlaws.plan.session`: the planning request `sdlaws plan` runs gives the command's plan from Python, and plan
tables name the draft length as the CSV does (num_spec_tokens, never gamma or steps)."""

import json

import pytest
from typer.testing import CliRunner

from sdlaws.cli import app
from sdlaws.errors import ConfigError
from sdlaws.hardware import load_hardware
from sdlaws.plan.session import PlanRequest
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import named_shape

SERVING = ["--target", "llama-3.1-8b", "--hardware", "h200", "--batch", "1,8,64", "--samples", "20"]


def _request(draft: str | None = None, **kw) -> PlanRequest:
    setup = ServingSetup(target=named_shape("llama-3.1-8b"), hardware=load_hardware("h200"),
                         draft=named_shape(draft) if draft else None)
    return PlanRequest(setup=setup, batch_sizes=(1, 8, 64), samples=20, **kw)


def _keys(value) -> set[str]:
    """Every dict key in a nested structure of dicts and lists."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_request_gives_the_commands_serving_plan():
    cli = CliRunner().invoke(app, ["plan", "serving", *SERVING, "--draft", "llama-3.2-1b", "--alpha", "0.7", "--json"])
    assert cli.exit_code == 0, cli.output
    ours = json.loads(json.dumps(_request("llama-3.2-1b", alpha=0.7).serving().to_dict()))
    data = json.loads(cli.stdout)
    assert ours["tables"] == data["tables"] and ours["plans"] == data["plans"] and ours["title"] == data["title"]


def test_without_a_draft_the_sdsl_nstar_is_served():
    plan_set = _request().serving()
    nstar = plan_set.select("draft_params")
    assert len(nstar) == 1 and plan_set.inputs["serving"]["draft"]["params"] == pytest.approx(nstar[0].value, rel=0.1)
    assert plan_set.inputs["cost_model"]["kind"] == "roofline"


def test_plan_tables_and_settings_use_the_csv_name():
    data = _request().full().to_dict()
    row = data["tables"]["serving"][0]
    assert {"chain_num_spec_tokens", "tree_num_spec_tokens", "tree_topk", "tree_verify_tokens",
            "leviathan_num_spec_tokens"} <= set(row)
    tree = next(p for p in data["plans"] if p["quantity"] == "tree_topk")
    assert {"num_spec_tokens", "tree_topk", "tree_verify_tokens"} <= set(tree["settings"])
    assert not {k for k in _keys(data) if "gamma" in k or k in ("steps", "topk", "verify_tokens")}


def test_num_spec_tokens_option_and_its_gamma_alias():
    law = ["--fit", "x.json"]  # never read: the out-of-range number stops the command first
    for flag in ("--num-spec-tokens", "--gamma"):
        result = CliRunner().invoke(app, ["plan", "pretraining", "--target", "llama-3-8b", flag, "0", *law])
        assert result.exit_code == 2 and "--num-spec-tokens 0 is out of range" in result.stderr


def test_acceptance_checks_stay_with_the_request():
    with pytest.raises(ConfigError, match="need --alpha"):
        _request(rank_shares=[0.5]).serving()
    assert _request(alpha=0.7).acceptance().alpha == 0.7 and _request().acceptance() is None
