"""Optimisers: SDSL draft size, serving plan per batch, pretraining budget (sdlaws.plan.optimize).

Fitted laws are represented by :class:`~sdlaws.plan.priors.PublishedLaw` objects with a spread: they have the
``law`` / ``params`` / ``sample(n, seed)`` surface the planner uses from ``sdlaws.fit.result.FitResult``.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import get_preset
from sdlaws.plan import priors
from sdlaws.plan.optimize import (ServingAcceptance, draft_size_table, full_plan, optimal_draft_size,
                                  optimal_pretraining_tokens, serving_plan)
from sdlaws.plan.priors import PublishedLaw
from sdlaws.rates import expected_tokens_chain
from sdlaws.plan.setup import ServingSetup
from sdlaws.roofline import ModelShape, draft_like, named_shape

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_sdsl_draft_size_for_70b_is_near_the_reconstruction():
    """docs/formulas.md#optimal-draft-size: D = D' = 2T, M = 70B gives N* ~ 2.73e8 (gamma ~ 10).

    Loose bounds on purpose: the plane coefficients are secondary [S] and the throughput form is a
    reconstruction [R]; this checks the pipeline, not the paper.
    """
    plan = optimal_draft_size(ModelShape.from_params(70e9), draft_tokens=2e12, target_tokens=2e12, samples=100)
    assert 2.0e8 < plan.value < 3.5e8
    assert 8 <= plan.settings["num_spec_tokens"] <= 12
    assert plan.ci[0] <= plan.value <= plan.ci[1] and plan.ci[0] < plan.ci[1]
    assert plan.speedup_ci[0] < plan.speedup < plan.speedup_ci[1]
    assert "residual sd" in plan.ci_kind
    assert plan.summary().startswith(f"draft_params = {plan.value:.3g} params [95% ")
    assert plan.inputs["plane"]["params"]["A"] == -0.0067


def test_draft_size_grows_with_target_and_tracks_sdsl_shortcut():
    table = draft_size_table([13e9, 30e9, 70e9, 110e9], samples=20)
    assert table["draft_params"].is_monotonic_increasing
    # Within ~20% of mu*M + M0 for 13-110B, as in docs/formulas.md#optimal-draft-size (again [S] coefficients: loose).
    ratio = table["draft_params"] / table["sdsl_shortcut_params"]
    assert ratio.between(0.8, 1.2).all()


def test_published_point_estimate_gives_no_interval():
    fixed = PublishedLaw(law="ppl_plane", params=priors.SDSL_PLANE.params, source="test")
    plan = optimal_draft_size(ModelShape.from_params(8e9), plane=fixed, samples=20)
    assert plan.ci is None and plan.speedup_ci is None and "no interval" in plan.ci_kind


def test_a_log_perplexity_plane_is_evaluated_as_its_own_law():
    from sdlaws.plan.optimize import sdsl_alpha

    log_plane = PublishedLaw(law="ppl_plane_log", params=pd.Series({"A": -0.3, "B": 0.14, "C": 1.28}), source="test")
    draft_params, target_params, tokens = np.array([1e8, 1e9]), 8e9, 1e11
    got = sdsl_alpha(draft_params, target_params, plane=log_plane, draft_tokens=tokens, target_tokens=tokens,
                     samples=5).point
    ppl_draft = priors.chinchilla_ppl(draft_params, tokens, priors.CHINCHILLA_LOSS)
    ppl_target = priors.chinchilla_ppl(target_params, tokens, priors.CHINCHILLA_LOSS)
    np.testing.assert_allclose(got, -0.3 * np.log(ppl_draft) + 0.14 * np.log(ppl_target) + 1.28)


def test_fitted_plane_parameter_names_are_checked():
    wrong = PublishedLaw(law="ppl_plane", params=pd.Series({"x": 1.0, "y": 2.0}), source="test")
    with pytest.raises(InputError, match="lacks parameter"):
        optimal_draft_size(ModelShape.from_params(8e9), plane=wrong, samples=5)


def _setup(target="llama-3-8b", hardware="h100", draft=1.5e8):
    return ServingSetup(target=named_shape(target), hardware=get_preset(hardware),
                        draft=ModelShape.from_params(draft), kv_len=1024)


def test_serving_settings_shrink_with_batch_size():
    """Regime change (Scylla Thm 1.3): optimal tree width and chain length are non-increasing in batch size."""
    acc = ServingAcceptance(alpha=0.7, alpha_draws=np.random.default_rng(0).normal(0.7, 0.03, 50), ci_kind="test")
    plans = serving_plan(_setup(), BATCHES, acc, samples=50)
    table = plans.tables["serving"]
    assert (np.diff(table["tree_topk"]) <= 0).all() and table["tree_topk"].iloc[0] > table["tree_topk"].iloc[-1]
    chain = table["chain_num_spec_tokens"]
    assert (np.diff(chain) <= 0).all() and chain.iloc[0] > chain.iloc[-1]
    assert (np.diff(table["tree_verify_tokens"]) <= 0).all()
    assert table["verify_memory_bound"].iloc[0]
    # Speedup from the recommended chain matches the speedup recomputed from the roofline pieces.
    row, setup = table.iloc[0], _setup()
    n = int(row["chain_num_spec_tokens"])
    tau = float(expected_tokens_chain(0.7, n))
    expected = tau / float(setup.chain_step_time_s(1, n)) * float(setup.target_time_s(1, 1))
    assert row["chain_speedup"] == pytest.approx(expected)
    assert len(plans.select("num_spec_tokens")) == len(BATCHES) == len(plans.select("tree_topk"))


def test_given_alpha_has_no_interval_and_measured_rates_are_used():
    acc = ServingAcceptance(alpha=0.7, position_rates=np.array([0.9, 0.8, 0.6, 0.4]),
                            rank_rates=np.array([0.7, 0.3, 0.1, 0.05, 0.02, 0.01, 0.01, 0.01]))
    plans = serving_plan(_setup(), [1, 64], acc)
    table = plans.tables["serving"]
    assert table["chain_num_spec_tokens"].max() <= 4  # only the measured positions can be used
    assert table["chain_num_spec_tokens_lower"].isna().all() and all(p.ci is None for p in plans.plans)


def test_topk_law_is_shown_alongside():
    law = PublishedLaw(law="topk_batch", params=pd.Series({"c": 8.0, "p": 0.5}), source="test", sd={"p": 0.05})
    table = serving_plan(_setup(), [1, 4, 64], ServingAcceptance(alpha=0.7), topk_law=law, samples=50).tables["serving"]
    assert table["law_topk"].tolist() == pytest.approx([8.0, 4.0, 1.0])
    assert (table["law_topk_lower"] < table["law_topk"]).iloc[1:].all()


def test_memory_warning_for_batches_that_do_not_fit():
    plans = serving_plan(_setup("llama-3-70b", "h200"), [1, 256], ServingAcceptance(alpha=0.7))
    assert plans.tables["serving"]["fits_memory"].tolist() == [True, False]
    assert any("batch 256" in w and "memory" in w for w in plans.warnings)


def test_pretraining_optimum_matches_first_order_condition():
    """D* solves d/dD [6 N D / (peak mfu) + V s_per_token(D)] = 0 for a tau law at a fixed chain length."""
    a, b, n, batch, serve = 0.3, -0.5, 4, 1, 1e11
    law = PublishedLaw(law="loglinear", params=pd.Series({"a": a, "b": b}), source="test", sd={"a": 0.02})
    setup = _setup(draft=3e8)
    plan = optimal_pretraining_tokens(law, setup, serve_tokens=serve, batch_size=batch, kind="tau", num_spec_tokens=n,
                                      data_range=(1e9, 1e11), samples=100)
    step_s = float(setup.chain_step_time_s(batch, n))
    train_per_token = 6 * setup.draft.params / (setup.hardware.peak_bf16_flops_per_s * 0.4)

    def derivative(log_d):
        d, tau = 10.0**log_d, a * log_d + b
        return train_per_token - serve * step_s / batch * a / (np.log(10) * d * tau**2)

    d_star = 10 ** brentq(derivative, 8.0, 14.0)
    assert np.log10(plan.value) == pytest.approx(np.log10(d_star), abs=0.03)  # grid step is 0.025 decades
    assert plan.ci[0] < plan.ci[1]
    s = plan.settings
    assert s["next_decade_serve_saving_gpu_hours"] < s["next_decade_train_gpu_hours"]  # past D* it no longer pays
    outside = not 1e9 <= plan.value <= 1e11
    assert any("outside the fitted range" in w for w in plan.warnings) == outside


def test_pretraining_needs_kind_and_num_spec_tokens():
    law = PublishedLaw(law="loglinear", params=pd.Series({"a": 0.3, "b": -0.5}), source="test")
    with pytest.raises(ConfigError, match="tau|alpha"):
        optimal_pretraining_tokens(law, _setup(), serve_tokens=1e10)
    with pytest.raises(ConfigError, match="--num-spec-tokens"):
        optimal_pretraining_tokens(law, _setup(), serve_tokens=1e10, kind="tau")
    alpha_law = PublishedLaw(law="loglinear", params=pd.Series({"a": 0.05, "b": 0.15}), source="test")
    plan = optimal_pretraining_tokens(alpha_law, _setup(), serve_tokens=1e11, kind="alpha")
    assert plan.ci is None and any("range unknown" in w for w in plan.warnings)


def test_full_plan_round_trips_to_plain_types():
    import json

    plans = full_plan(ServingSetup(named_shape("llama-3-8b"), get_preset("h200")), [1, 64], samples=30)
    data = json.loads(json.dumps(plans.to_dict()))
    assert {"draft_size_vs_target", "draft_size_by_batch", "serving"} <= set(data["tables"])
    assert plans.to_frame()["quantity"].tolist().count("draft_params") == 3  # SDSL + 2 batch sizes
    served = plans.inputs["serving"]["draft"]
    # the served draft is the real architecture of the SDSL N*: the target's vocabulary, a head_dim of 64 or 128
    # and KV heads dividing the heads
    assert served == draft_like(named_shape("llama-3-8b"), plans.plans[0].value).to_dict()
    assert served["vocab"] == 128256 and served["head_dim"] in (64, 128) and served["heads"] % served["kv_heads"] == 0
    assert served["params"] == pytest.approx(plans.plans[0].value, rel=0.05)


def test_acceptance_kind_reads_the_declared_kind_of_the_response():
    from types import SimpleNamespace

    from sdlaws.plan.optimize import acceptance_kind

    assert acceptance_kind(SimpleNamespace(y="mean_acceptance_length")) == "tau"
    assert acceptance_kind(SimpleNamespace(y="alpha_mle")) == "alpha"
    assert acceptance_kind(SimpleNamespace(y="acceptance_rate")) == "alpha"
    # a name that merely contains "alpha" is not an acceptance (substring matching used to say it was)
    assert acceptance_kind(SimpleNamespace(y="alpha_slope_per_decade")) is None


def test_one_plane_per_plan_and_only_plane_laws_evaluate_as_planes(tmp_path):
    from sdlaws.fit import fit_law
    from sdlaws.plan.session import load_laws

    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"draft_ppl": rng.uniform(8, 30, 30), "target_ppl": rng.uniform(5, 9, 30)})
    rows["alpha_mle"] = -0.006 * rows["draft_ppl"] + 0.012 * rows["target_ppl"] + 0.66 + rng.normal(0, 0.02, 30)
    paths = []
    for law in ("ppl_plane", "ppl_plane_log"):
        fit_law(rows, law, weight=None).save(tmp_path / f"{law}.json")
        paths.append(tmp_path / f"{law}.json")
    assert load_laws(paths[1:])["plane"].law == "ppl_plane_log"
    with pytest.raises(ConfigError, match=r"a second plane fit was given \(ppl_plane_log after ppl_plane\)"):
        load_laws(paths)
    with pytest.raises(InputError, match="not an acceptance plane"):
        priors.plane_alpha(10.0, 6.0, 0.1, 0.2, 0.3, law="linear")


def test_a_fitted_plane_warns_where_the_plan_leaves_its_perplexities():
    from sdlaws.fit import fit_law

    rng = np.random.default_rng(3)
    rows = pd.DataFrame({"draft_ppl": rng.uniform(8, 30, 30), "target_ppl": rng.uniform(5, 7, 30)})
    rows["alpha_mle"] = -0.006 * rows["draft_ppl"] + 0.012 * rows["target_ppl"] + 0.66 + rng.normal(0, 0.02, 30)
    plane = fit_law(rows, "ppl_plane", weight=None)
    low, high = plane.meta["x_range"]["target_ppl"]
    assert priors.plane_extrapolation(plane, 10.0, (low + high) / 2) == ""
    assert priors.plane_extrapolation(plane, 10.0, 9.0) == (f"the ppl_plane fit is extrapolated: target perplexity "
                                                            f"9 outside the fitted {low:.3g}-{high:.3g}")
    assert priors.plane_extrapolation(priors.SDSL_PLANE, 100.0, 100.0) == ""   # published: no range recorded
    plan = optimal_draft_size(ModelShape.from_params(8e9), plane=plane, samples=20)
    target_ppl = priors.chinchilla_ppl(8e9, priors.DEFAULT_PRETRAIN_TOKENS, priors.CHINCHILLA_LOSS)
    assert (not low <= target_ppl <= high) and any("target perplexity" in w for w in plan.warnings)
