"""Step-time law, residual surfaces, out-of-sample checks, engine tree replica and batch steps, on synthetic data
with known truth."""

import numpy as np
import pandas as pd
import pytest

from sdlaws.errors import InputError
from sdlaws.hardware import get_preset
from sdlaws.plan import costcheck
from sdlaws.plan.acceptance import batch_steps, engine_tree, profile_array
from sdlaws.plan.cost import fit_steptime, law_time_s, load_step_fit, prior, workload
from sdlaws.roofline import draft_like, named_shape

H100, H200 = get_preset("h100"), get_preset("h200")
SHAPES = ("random:llama-3.1-8b", "random:llama-3.2-1b", "random:qwen2.5-7b", "random:llama-3.2-3b")
TRUTH_FACTORS = pd.Series({"hbm_bytes_per_s": 0.9, "matmul_flops_per_s": 0.8, "gemm_half_rows": 0.5,
                           "smooth_p": 1.3, "attention_bytes_factor": 1.2, "attention_flops_per_s": 0.9,
                           "fixed_s": 4.0, "layer_s": 1.5, "elementwise_factor": 2.0})


def _table(params, shapes=SHAPES, kvs=(512, 2048), gpu="NVIDIA H100 80GB HBM3", distortion=None):
    """Step rows whose times follow the law with ``params`` (times an optional distortion of log2 batch)."""
    rows = []
    for name in shapes:
        shape = named_shape(name)
        grid = [(b, n, c) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for n in (1, 2, 4, 8, 16, 32) for c in kvs]
        b, n, c = (np.array(v, dtype=float) for v in zip(*grid))
        t = law_time_s(params, workload(shape, b, n, c))
        if distortion is not None:
            t = t * distortion(np.log2(b), np.log2(n))
        rows += [dict(run_id=f"{name}-{i}", status="ok", gpu_name=gpu, model_name=name, batch_size=int(bi),
                      tokens_per_row=int(ni), kv_len=int(ci), median_time_s=float(ti))
                 for i, (bi, ni, ci, ti) in enumerate(zip(b, n, c, t))]
    return pd.DataFrame(rows)


def test_law_recovers_its_parameters_from_several_shapes_and_contexts():
    truth = prior(H100) * TRUTH_FACTORS
    fit = fit_steptime(_table(truth), H100)
    assert fit.params["hbm_bytes_per_s"] == pytest.approx(truth["hbm_bytes_per_s"], rel=0.02)
    assert fit.params["matmul_flops_per_s"] == pytest.approx(truth["matmul_flops_per_s"], rel=0.03)
    assert fit.errors()["law"].abs().max() < 0.5
    lower, upper = fit.conf_int().loc["hbm_bytes_per_s"]
    assert lower <= fit.params["hbm_bytes_per_s"] <= upper


def test_leave_one_shape_out_predicts_an_unseen_shape_when_the_law_holds():
    truth = prior(H100) * TRUTH_FACTORS
    errors = costcheck.leave_one_shape_out(_table(truth), H100)
    assert set(errors["model_name"]) == set(SHAPES)
    assert errors["pct_error"].abs().max() < 2.0
    assert errors["inputs"].str.startswith("law fitted on").all()


def test_surface_corrects_what_the_law_cannot_follow_and_leave_one_out_shows_it():
    truth = prior(H100) * TRUTH_FACTORS
    wiggle = lambda lb, ln: 1.0 + 0.12 * np.sin(1.3 * lb) * np.exp(-ln / 4)  # a smooth kernel-selection pattern
    table = _table(truth, shapes=SHAPES[:2], distortion=wiggle)
    fit = fit_steptime(table, H100)
    loo = costcheck.leave_one_point_out(table, H100)
    law_alone = fit.errors()["law"].abs()
    assert law_alone.max() > 8.0                         # the law alone misses the distortion
    assert loo["pct_error"].abs().median() < law_alone.median() / 3
    assert loo["pct_error"].abs().max() < law_alone.max()


def test_head_tables_join_the_fit_on_the_fused_path_and_give_surfaces_only_otherwise():
    # heads run the fused path, whose kernels the law counts: with the head's table in the fit the parameters stay
    # the truth's, and the law alone (no surface) times the head, fc projection included
    truth = prior(H100) * TRUTH_FACTORS
    head = "head:random:llama-3.1-8b?layers=1"
    decoders, heads = _table(truth, shapes=SHAPES[:2]), _table(truth, shapes=(head,))
    both = fit_steptime(pd.concat([decoders, heads]), H100)
    assert both.source == f"fitted on {len(decoders) + len(heads)} step timings"
    for name, rel in (("hbm_bytes_per_s", 0.02), ("matmul_flops_per_s", 0.03)):   # the well-identified ones
        assert both.params[name] == pytest.approx(truth[name], rel=rel)
    assert both.errors()["law"][both.residuals["model_name"].eq(head)].abs().max() < 1.0
    # a head table of passes the law's terms do not count (stock layers, slower with the batch) moves the
    # parameters when fitted; given as surface_only it does not, and its surface still times the head
    slow = _table(truth, shapes=(head,), distortion=lambda lb, ln: 1.0 + 0.4 * lb)
    moved = fit_steptime(pd.concat([decoders, slow]), H100)
    assert moved.params["hbm_bytes_per_s"] != pytest.approx(both.params["hbm_bytes_per_s"], rel=0.05)
    alone, aside = fit_steptime(decoders, H100), fit_steptime(decoders, H100, surface_only=slow)
    pd.testing.assert_series_equal(aside.params, alone.params)
    assert aside.source == f"fitted on {len(decoders)} step timings, {len(slow)} more with surfaces only"
    assert aside.errors()["law"].abs().max() > 50    # the law alone misses the stock-layer head ...
    rows = slow.iloc[:3]
    np.testing.assert_allclose(aside.time_s(head, rows["batch_size"], rows["tokens_per_row"], rows["kv_len"]),
                               rows["median_time_s"], rtol=0.02)   # ... its surface does not
    with pytest.raises(InputError, match="in both the fitted and the surface-only"):
        fit_steptime(pd.concat([decoders, heads]), H100, surface_only=slow)


def test_predictions_flag_points_outside_the_measured_box_and_unmeasured_shapes():
    truth = prior(H100) * TRUTH_FACTORS
    fit = fit_steptime(_table(truth, shapes=SHAPES[:1], kvs=(512,)), H100)
    inside = fit.predict(SHAPES[0], [4, 64], [2, 8], 512)
    assert not inside["extrapolated"].any() and inside["measured_shape"].all()
    outside = fit.predict(SHAPES[0], [512], [1], 512)
    assert outside["extrapolated"].all()
    other = fit.predict("random:mistral-7b", [1], [1], 512)
    assert other["extrapolated"].all() and not other["measured_shape"].any()
    assert (other["lower_s"] < other["time_s"]).all() and (other["time_s"] < other["upper_s"]).all()


def test_transfer_by_datasheet_ratios_is_exact_when_only_the_peaks_change():
    truth_a = prior(H100) * TRUTH_FACTORS
    truth_b = truth_a.copy()
    truth_b["hbm_bytes_per_s"] *= H200.hbm_bytes_per_s / H100.hbm_bytes_per_s  # same FLOP peaks on both
    source = _table(truth_a)
    target = _table(truth_b, gpu="NVIDIA H200")
    errors = costcheck.transfer_error(source, H100, target, H200)
    assert len(errors) == len(target)
    assert errors["pct_error"].abs().max() < 1.0


def test_fit_round_trips_through_json(tmp_path):
    truth = prior(H100) * TRUTH_FACTORS
    fit = fit_steptime(_table(truth, shapes=SHAPES[:1]), H100)
    same = load_step_fit(fit.save(tmp_path / "steptime.json"))
    args = (SHAPES[0], [3, 100], [5, 7], 700)
    np.testing.assert_allclose(same.time_s(*args), fit.time_s(*args), rtol=1e-9)


def test_bad_step_tables_are_refused():
    truth = prior(H100) * TRUTH_FACTORS
    table = _table(truth, shapes=SHAPES[:1], kvs=(512,))
    with pytest.raises(InputError, match="several devices"):
        fit_steptime(pd.concat([table, table.assign(gpu_name="NVIDIA H200")]), H100)
    with pytest.raises(InputError, match="unknown architecture"):
        fit_steptime(table.assign(model_name="/tmp/my-model"), H100)
    with pytest.raises(InputError, match="at least"):
        fit_steptime(table.head(3), H100)


# ----------------------------------------------------------------------------------------------- acceptance

PROFILE = [[0.6, 0.12, 0.05, 0.03, 0.02], [0.55, 0.1, 0.04, 0.03], [0.45, 0.08, 0.04], [0.42, 0.08]]


@pytest.mark.parametrize("topk,depth,budget", [(1, 4, 4), (2, 2, 4), (4, 3, 12), (4, 4, 7), (8, 4, 20), (5, 3, 9)])
def test_engine_tree_selects_the_nodes_the_engine_selects(topk, depth, budget):
    torch = pytest.importorskip("torch")
    from sdlaws.measure import tree

    shape = tree.TreeShape(topk, depth, budget)
    logq = torch.log(torch.tensor(profile_array(PROFILE, depth, topk)).clamp(min=1e-9)).float()
    pool_score = torch.zeros(1, shape.num_pool)
    pool_path = torch.full((1, shape.num_pool, depth), -1, dtype=torch.long)
    pool_score[:, :topk] = logq[0]
    pool_path[:, :topk, 0] = torch.arange(topk)
    frontier = torch.arange(topk)[None]
    tokens = torch.zeros(1, shape.num_pool, dtype=torch.long)
    for level in range(1, depth):
        frontier, _ = tree.grow(tokens, pool_score, pool_path, shape, level, frontier,
                                torch.zeros(1, topk, topk, dtype=torch.long), logq[level].expand(1, topk, topk))
    selected = tree.select(pool_score, budget)[0].tolist()
    ours = engine_tree(PROFILE, topk, depth, budget)
    depths = shape.node_depth(torch.device("cpu"))[selected].tolist()
    assert sorted(ours.depth.tolist()) == sorted(depths)
    # the path probability of each selected engine node, from its ancestry
    q = profile_array(PROFILE, depth, topk)
    probs = []
    for node in selected:
        path = [p for p in pool_path[0, node].tolist() if p >= 0]
        probs.append(np.prod([q[d, p % topk] for d, p in enumerate(path)]))
    np.testing.assert_allclose(sorted(ours.prob), sorted(probs), rtol=1e-6)


def test_chain_tau_is_one_plus_the_sum_of_prefix_products():
    chain = engine_tree(PROFILE, 1, 4)
    expected = 1 + 0.6 + 0.6 * 0.55 + 0.6 * 0.55 * 0.45 + 0.6 * 0.55 * 0.45 * 0.42
    assert chain.tau == pytest.approx(expected)
    assert chain.length_pmf(4).sum() == pytest.approx(1.0)


def _direct_steps(pmf, max_new, batch, draws, seed):
    """The engine's loop, one row at a time: steps until every row of the batch has max_new tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        longest = 0
        for _row in range(batch):
            have, steps = 1, 0
            while have < max_new and steps < max_new - 1:
                have += 1 + rng.choice(len(pmf), p=pmf)
                steps += 1
            longest = max(longest, steps)
        out.append(longest)
    return float(np.mean(out))


def test_static_batch_steps_match_a_direct_simulation_of_the_engine_loop():
    """The exact expected maximum over rows (finish_cdf) against a direct simulation of the engine's loop."""
    pmf = engine_tree(PROFILE, 2, 3).length_pmf(3)
    for batch in (1, 16):
        exact = batch_steps(pmf, 32, batch)
        direct = _direct_steps(pmf, 32, batch, draws=400, seed=2)
        assert exact == pytest.approx(direct, rel=0.03)
    # deterministic acceptance: every step commits depth + 1 tokens
    assert batch_steps(np.array([0.0, 0.0, 1.0]), 32, 8) == np.ceil(31 / 3)
    # the slowest of many rows needs more steps than one row
    assert batch_steps(pmf, 32, 64) > batch_steps(pmf, 32, 1)


@pytest.mark.parametrize("params", [3e7, 2.5e8, 1.2e9, 3e9])
def test_planned_drafts_are_real_architectures(params):
    target = named_shape("llama-3.1-8b")
    draft = draft_like(target, params)
    assert draft.vocab == target.vocab and draft.tied
    assert draft.head_dim in (64, 128) and draft.hidden == draft.heads * draft.head_dim
    assert draft.heads % draft.kv_heads == 0 and draft.kv_heads <= 8
    assert draft.params == pytest.approx(params, rel=0.1)
