"""``ppl-plane``: alpha versus draft and target perplexity (SDSL, ``alpha = A ppl_draft + B ppl_target + C``).

Every target x draft pair of the scale (at least 3 x 4 at the ``h100`` scale) is measured as a chain draft at
T=0; the perplexities of all models on the corpus test split are written to ``ppl.csv`` first, so the sweep
fills ``draft_ppl`` and ``target_ppl`` of every row.

Its section of the results document fits ``ppl_plane`` of ``alpha_mle`` with a bootstrap over whole drafts, and
tests each published coefficient where its evidence lies: the draft slope A by that draft bootstrap, the target
slope B by a regression of the per-target means (the pairs share a few target perplexities, so the row-level t
interval of B counts the same targets many times).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sdlaws.experiments import verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import (ALPHA, N_BOOT, SEED, Analysis, Doc, Tables, ci, f, fit_summary, listed,
                                          setup, table)
from sdlaws.experiments.scale import Scale

NAME = "ppl-plane"
FILES = {"plane": ("acceptance/ppl-plane.csv", "spec"), "plane_ppl": ("acceptance/ppl.csv", "ppl")}
#: Published signs of the slopes: a better draft (lower perplexity) is accepted more, A < 0; B > 0.
EXPECTED_SIGNS = {"A": -1, "B": 1}


def models(scale: Scale):
    """The targets, then the plane's drafts."""
    return [*(scale.spec(shape, scale.target_tokens) for shape in scale.targets),
            *(scale.spec(shape, scale.draft_tokens) for shape in scale.plane_drafts)]


def measure(ctx: Context) -> None:
    """Perplexities first, then each target with every draft (targets in spread order)."""
    specs = models(ctx.scale)
    targets = [ctx.final(spec) for spec in specs[:len(ctx.scale.targets)]]
    drafts = spread([ctx.final(spec) for spec in specs[len(ctx.scale.targets):]])
    ctx.measure_ppl([*targets, *drafts])
    for target in spread(targets):
        ctx.sweep(NAME, target, drafts, gammas=(ctx.scale.gamma,), batch_sizes=(ctx.scale.num_prompts,),
                  temperatures=(0.0,))


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """The plane's fit, each coefficient's named test against the published value, and the verdict."""
    from sdlaws.fit import fill_perplexities, fit_law, used_rows
    from sdlaws.plan.priors import SDSL_PLANE

    rows = fill_perplexities(tables["plane"][tables["plane"]["method"].ne("ar")], tables["plane_ppl"])
    fit = fit_law(rows, "ppl_plane")
    summary_ = fit_summary(fit, fit_law(rows, "ppl_plane", unit="draft_name", n_boot=N_BOOT, seed=SEED))
    drafts, targets = int(rows["draft_name"].nunique()), int(rows["target_name"].nunique())
    target_means = target_means_test(rows, fit.y, summary_["params"]["A"])
    by_drafts = dict(test="the draft bootstrap", units=drafts, unit="drafts")
    tests = {"A": dict(by_drafts, estimate=summary_["params"]["A"], interval=summary_["boot_ci"]["A"]),
             "B": dict(test="the regression of the per-target means", estimate=target_means["B"],
                       interval=target_means["ci"], units=targets, unit="targets"),
             "C": dict(by_drafts, estimate=summary_["params"]["C"], interval=summary_["boot_ci"]["C"])}
    for name, t in tests.items():
        published = float(SDSL_PLANE.params[name])
        t.update(published=published, ratio_fitted_to_published=summary_["params"][name] / published,
                 published_inside=bool(t["interval"][0] is not None and t["interval"][0] <= published
                                       <= t["interval"][1]))
        if name in EXPECTED_SIGNS:
            t["sign"] = _sign(t["interval"])
            t["verdict"] = verdicts.coefficient(t["sign"], EXPECTED_SIGNS[name], t["units"])
    data = {"fit": summary_, "coefficients": tests, "target_means": target_means, "setup": setup(rows),
            "published_source": SDSL_PLANE.source, "num_targets": targets, "num_drafts": drafts,
            "draft_ppl_range": [float(rows["draft_ppl"].min()), float(rows["draft_ppl"].max())],
            "target_ppl_range": [float(rows["target_ppl"].min()), float(rows["target_ppl"].max())],
            "verdict": verdicts.combine(tests[n]["verdict"] for n in EXPECTED_SIGNS)}
    return Analysis(data, fits={"sdsl_ppl_plane": (fit, None)},
                    plots={"sdsl_ppl_plane": ({"plane": fit}, {"plane": used_rows(rows, fit)})})


def target_means_test(rows: pd.DataFrame, y: str, a: float) -> dict[str, Any]:
    """B from the targets alone: OLS of each target's mean ``y - A*draft_ppl`` on its perplexity, with a t interval
    on ``targets - 2`` degrees of freedom (None below 3 targets)."""
    from statsmodels.regression.linear_model import OLS

    means = rows.assign(rest=rows[y] - a * rows["draft_ppl"]).groupby("target_name")[["rest", "target_ppl"]].mean()
    df = len(means) - 2
    if df < 1:
        return {"B": None, "ci": [None, None], "pvalue": None, "dof": max(df, 0)}
    x = means["target_ppl"].to_numpy(dtype=float)
    res = OLS(means["rest"].to_numpy(dtype=float), pd.DataFrame({"C": 1.0, "B": x})).fit()
    lo, hi = res.conf_int(ALPHA).loc["B"]
    return {"B": float(res.params["B"]), "ci": [float(lo), float(hi)], "pvalue": float(res.pvalues["B"]), "dof": df}


def _sign(interval) -> int:
    """+1 / -1 when the interval lies above / below 0, else 0 (also for a missing interval)."""
    lo, hi = interval
    if lo is None:
        return 0
    return 1 if lo > 0 else (-1 if hi < 0 else 0)


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """The summary table's row: verdict and the slopes."""
    p = d["fit"]["params"]
    return [["SDSL plane: alpha vs draft and target perplexity", d["verdict"],
             f"A = {f(p['A'])}, B = {f(p['B'])}, R2 = {f(d['fit']['r2'])}"]]


def render(d: dict, doc: Doc) -> list[str]:
    """Coefficients with their t, bootstrap and test intervals against the published ones; verdicts."""
    fit, setup_, tests = d["fit"], d["setup"], d["coefficients"]
    rows = [[name, ci(fit["params"][name], fit["ci"][name]), listed(fit["boot_ci"][name], f), t["test"],
             listed(t["interval"], f), f(t["published"], 4), f(t["ratio_fitted_to_published"]),
             f(t["published_inside"])] for name, t in tests.items()]
    return [f"## SDSL plane: acceptance versus draft and target perplexity ({d['verdict']})", "",
            f"{d['num_targets']} targets x {d['num_drafts']} drafts ({listed(setup_['drafts'])}), chain gamma "
            f"{listed(setup_['num_spec_tokens'])}, T = {listed(setup_['temperatures'], f)}; draft perplexity "
            f"{f(d['draft_ppl_range'][0])}-{f(d['draft_ppl_range'][1])}, target perplexity "
            f"{f(d['target_ppl_range'][0])}-{f(d['target_ppl_range'][1])} (held-out split of the corpus). Law: "
            f"`{fit['y']} = A*ppl_draft + B*ppl_target + C` (WLS) over {fit['nobs']} pairs, R2 = {f(fit['r2'])}; "
            "the bootstrap resamples whole drafts. Each coefficient is tested where its evidence lies: A and C by "
            "the draft bootstrap, B by the regression of the per-target means on the target perplexity "
            f"(a t interval with {d['target_means']['dof']} residual degree(s) of freedom).", "",
            *table(["coefficient", f"fitted [{doc.pct} t]", "boot (drafts)", "test", f"test interval [{doc.pct}]",
                    "published [S]", "fitted / published", "published inside test interval"], rows),
            *[verdicts.coefficient_sentence(name, tests[name]["verdict"], tests[name]["test"], tests[name]["estimate"],
                                            tests[name]["interval"], tests[name]["units"], tests[name]["unit"])
              for name in EXPECTED_SIGNS if tests[name]["estimate"] is not None],
            verdicts.shared_units("B", fit["ci"]["B"], fit["nobs"], d["num_targets"], "target perplexities"),
            verdicts.published_transfer([n for n, t in tests.items() if not t["published_inside"]]), "",
            f"**Verdict: {d['verdict']}** ("
            + ", ".join(f"{n}: {tests[n]['verdict']}" for n in EXPECTED_SIGNS) + ").", "",
            doc.fig("sdsl_ppl_plane.png"), ""]


SECTION = Section("plane", FILES, analyse, render, summary)
EXPERIMENT = Experiment(NAME, "alpha vs draft and target perplexity over a target x draft grid (SDSL plane)",
                        models, measure, sections=(SECTION,))
