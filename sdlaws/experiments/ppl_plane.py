"""``ppl-plane``: alpha versus draft and target perplexity (SDSL, ``alpha = A ppl_draft + B ppl_target + C``).

Every target x draft pair of the scale (at least 3 x 4 at the ``h100`` scale) is measured as a chain draft at
the scale's plane temperatures; the perplexities of all models on the corpus's held-out set are written to
``ppl.csv`` first, so the sweep fills ``draft_ppl`` and ``target_ppl`` of every row.

Its section of the results document fits ``ppl_plane`` of ``alpha_mle`` per temperature and reads every
coefficient from the noise that matters: a row shares its target's perplexity and noise with every other row of
that target, and its draft's with every row of that draft, so intervals come from the two-way pigeonhole
bootstrap over drafts x targets (x training seeds, when there are several; :mod:`sdlaws.experiments.multiway`).
The log-perplexity plane ``alpha = A log ppl_draft + B log ppl_target + C`` is fitted to the same rows and
compared by AIC and by the error on a left-out draft and a left-out target. The at-scale run (``--scale
h200-science``), once committed, is the section's primary result and the suite's small-budget plane follows it
(:mod:`sdlaws.experiments.at_scale`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sdlaws.experiments import at_scale, verdicts
from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.multiway import cluster_bootstrap, leave_one_out_rmse, seed_factors
from sdlaws.experiments.registry import Experiment, Section
from sdlaws.experiments.reporting import Analysis, Doc, Tables, ci, f, fit_summary, listed, setup, table, tkey
from sdlaws.experiments.scale import Scale

NAME = "ppl-plane"
TITLE = "SDSL plane: acceptance versus draft and target perplexity"
#: Table keys of the two datasets by role: the suite's small-budget plane and the at-scale run.
SMALL_BUDGET = {"spec": "plane", "ppl": "plane_ppl", "run": "acceptance_run"}
AT_SCALE = at_scale.keys("plane")
FILES = {"plane": ("acceptance/ppl-plane.csv", "spec"), "plane_ppl": ("acceptance/ppl.csv", "ppl"),
         "acceptance_run": ("acceptance/run.json", "json"), **at_scale.files(NAME, AT_SCALE)}
RUNS = at_scale.Runs(AT_SCALE, SMALL_BUDGET, FILES)
#: Published signs of the slopes: a better draft (lower perplexity) is accepted more, A < 0; B > 0.
EXPECTED_SIGNS = {"A": -1, "B": 1}
#: The two forms of the plane: their laws (:data:`sdlaws.fit.LAWS`). ``linear`` is SDSL's; ``log`` is the alternative.
FORMS = {"linear": "ppl_plane", "log": "ppl_plane_log"}
#: Each form's fit JSON and figure (``results/NAME.json``, ``.png``), loadable with :func:`sdlaws.fit.load_fits`.
FIGURES = {"linear": "sdsl_ppl_plane", "log": "sdsl_ppl_plane_log"}
#: Bootstrap factors: whole drafts and whole targets, by shape (the seeds of one shape are a factor of their own).
FACTORS = ("draft_shape", "target_shape")
#: The directions of leave-one-unit-out prediction error: label -> factor left out.
LEFT_OUT = {"draft": "draft_shape", "target": "target_shape"}


def models(scale: Scale):
    """The targets, then the plane's drafts."""
    return [*map(scale.plane_target_spec, scale.targets), *scale.plane_draft_specs()]


def measure(ctx: Context) -> None:
    """Perplexities first, then each target with every draft (targets in spread order)."""
    specs = models(ctx.scale)
    targets = [ctx.final(spec) for spec in specs[:len(ctx.scale.targets)]]
    drafts = spread([ctx.final(spec) for spec in specs[len(ctx.scale.targets):]])
    ctx.measure_ppl([*targets, *drafts])
    for target in spread(targets):
        ctx.sweep(NAME, target, drafts, num_spec_tokens=(ctx.scale.num_spec_tokens,),
                  batch_sizes=(ctx.scale.num_prompts,), temperatures=ctx.scale.plane_temperatures)


# ---------------------------------------------------------------------------------------------------- analysis

def analyse(tables: Tables) -> Analysis:
    """The plane of the at-scale run when it is committed, with the small-budget plane below; else that one."""
    return at_scale.analyse(tables, RUNS, analyse_run, seeds_resampled)


def seeds_resampled(d: dict) -> bool:
    """Whether every temperature's bootstrap resamples training seeds (:func:`seed_factors`)."""
    return all("train_seed" in g["factors"] for g in d["groups"].values())


def analyse_run(tables: Tables, keys: dict[str, str]) -> Analysis:
    """Per temperature on one dataset (table keys by role): both forms of the plane, their two-way intervals and
    out-of-sample errors, verdicts."""
    from sdlaws.fit import fill_perplexities, fit_law_by, used_rows
    from sdlaws.plan.cost import short_name

    spec = tables[keys["spec"]]
    rows = fill_perplexities(spec[spec["method"].ne("ar")], tables[keys["ppl"]])
    rows = rows.assign(draft_shape=rows["draft_name"].map(short_name), target_shape=rows["target_name"].map(short_name))
    fits = {form: fit_law_by(rows, law, group="temperature") for form, law in FORMS.items()}
    used = {t: used_rows(rows, fit) for t, fit in fits["linear"].items()}
    groups = {tkey(t): plane_group(used[t], {form: fits[form][t] for form in FORMS}) for t in used}
    return Analysis({"groups": groups, "setup": setup(rows),
                     "verdict": verdicts.combine(g["verdict"] for g in groups.values())},
                    fits={FIGURES[form]: (fits[form], "temperature") for form in FORMS},
                    plots={FIGURES[form]: ({tkey(t): fit for t, fit in fits[form].items()},
                                           {tkey(t): used[t] for t in used}) for form in FORMS})


def plane_group(rows: pd.DataFrame, fits: dict[str, Any]) -> dict[str, Any]:
    """Numbers and verdict of the rows of one temperature (``fits``: both forms of :data:`FORMS` fitted to them)."""
    from sdlaws.plan.priors import SDSL_PLANE

    rows, factors = seed_factors(rows, FACTORS)
    forms = {form: form_summary(fit, rows, factors) for form, fit in fits.items()}
    units = forms["linear"]["two_way"]["units"]
    targets, drafts = units["target_shape"], units["draft_shape"]
    tests = {}
    for name, published in SDSL_PLANE.params.items():
        estimate, interval = forms["linear"]["fit"]["params"][name], forms["linear"]["two_way"]["ci"][name]
        tests[name] = {"estimate": estimate, "interval": interval, "published": float(published),
                       "ratio_fitted_to_published": estimate / float(published),
                       "published_inside": bool(interval[0] is not None and interval[0] <= published <= interval[1])}
        if name in EXPECTED_SIGNS:
            tests[name]["sign"] = _sign(interval)
            tests[name]["verdict"] = verdicts.plane_coefficient(tests[name]["sign"], EXPECTED_SIGNS[name], targets,
                                                                drafts)
    aic_gap = forms["log"]["aic"] - forms["linear"]["aic"]
    errors = {d: (forms["linear"]["left_out_rmse"][d], forms["log"]["left_out_rmse"][d]) for d in LEFT_OUT}
    return {"forms": forms, "coefficients": tests, "factors": factors, "num_targets": targets, "num_drafts": drafts,
            "published_source": SDSL_PLANE.source, "aic_log_minus_linear": aic_gap,
            "preferred_form": verdicts.plane_form(aic_gap, errors),
            "draft_ppl_range": [float(rows["draft_ppl"].min()), float(rows["draft_ppl"].max())],
            "target_ppl_range": [float(rows["target_ppl"].min()), float(rows["target_ppl"].max())],
            "verdict": verdicts.combine(tests[n]["verdict"] for n in EXPECTED_SIGNS)}


def form_summary(fit, rows: pd.DataFrame, factors: list[str]) -> dict[str, Any]:
    """One form of the plane: its fit, its multiway bootstrap intervals, AIC and leave-one-draft-out /
    leave-one-target-out RMSE (the same rows for both forms, so the numbers compare)."""
    from sdlaws.fit import fit_law

    def refit(kept: pd.DataFrame):
        """The same law on fewer rows."""
        return fit_law(kept, fit.spec.name)

    return {"fit": fit_summary(fit), "two_way": cluster_bootstrap(fit, rows, factors), "aic": float(fit.gof["aic"]),
            "left_out_rmse": {d: leave_one_out_rmse(rows, refit, col) for d, col in LEFT_OUT.items()}}


def _sign(interval) -> int:
    """+1 / -1 when the interval lies above / below 0, else 0 (also for a missing interval)."""
    lo, hi = interval
    if lo is None:
        return 0
    return 1 if lo > 0 else (-1 if hi < 0 else 0)


# ---------------------------------------------------------------------------------------------------- markdown

def summary(d: dict) -> list[list[str]]:
    """The summary table's row: verdict and the slopes of the first temperature with their two-way intervals
    (of the at-scale run when there is one)."""
    key, g = next(iter(d["groups"].items()))
    c = g["coefficients"]
    return at_scale.summary(d, [[
        "SDSL plane: alpha vs draft and target perplexity", d["verdict"],
        f"A = {ci(c['A']['estimate'], c['A']['interval'])}, B = {ci(c['B']['estimate'], c['B']['interval'])} "
        f"(two-way bootstrap, {g['num_targets']} targets x {g['num_drafts']} drafts, {key})"]])


def render(d: dict, doc: Doc) -> list[str]:
    """The at-scale plane when there is one, then the small-budget plane; else that one alone."""
    return at_scale.render(d, doc, TITLE, _md_run)


def _md_run(d: dict, doc: Doc, place: at_scale.Place) -> list[str]:
    """One dataset, per temperature: coefficients with their two-way intervals against the published ones, the
    two forms, verdicts."""
    setup_ = d["setup"]
    lines = [f"Drafts {listed(setup_['drafts'])}, chain gamma {listed(setup_['num_spec_tokens'])}, T = "
             f"{listed(setup_['temperatures'], f)}; perplexities on the corpus's held-out set. Law: "
             "`alpha_mle = A*ppl_draft + B*ppl_target + C` (WLS, weighted by the drafted tokens), and its log form "
             "`alpha_mle = A*ln(ppl_draft) + B*ln(ppl_target) + C` on the same rows (second figure). "
             + verdicts.two_way_method(), ""]
    for key, g in d["groups"].items():
        lines += _render_group(key, g, doc, place)
    return [*lines, *(place.fig(doc, f"{name}.png") for name in FIGURES.values()), ""]


def _render_group(key: str, g: dict, doc: Doc, place: at_scale.Place) -> list[str]:
    """One temperature's tables and sentences."""
    lin, tests = g["forms"]["linear"], g["coefficients"]
    boot = lin["two_way"]
    rows = [[name, ci(lin["fit"]["params"][name], lin["fit"]["ci"][name]), listed(t["interval"], f),
             f(t["published"], 4), f(t["ratio_fitted_to_published"]), f(t["published_inside"])]
            for name, t in tests.items()]
    form_rows = [[form, *[ci(s["fit"]["params"][n], s["two_way"]["ci"][n]) for n in ("A", "B", "C")],
                  f(s["fit"]["r2"]), f(s["aic"]), *[f(s["left_out_rmse"][u]) for u in LEFT_OUT]]
                 for form, s in g["forms"].items()]
    return [place.heading(f"{key}: {g['num_targets']} targets x {g['num_drafts']} drafts ({g['verdict']})", 1), "",
            f"Draft perplexity {f(g['draft_ppl_range'][0])}-{f(g['draft_ppl_range'][1])}, target perplexity "
            f"{f(g['target_ppl_range'][0])}-{f(g['target_ppl_range'][1])}, {lin['fit']['nobs']} pairs, R2 = "
            f"{f(lin['fit']['r2'])}; {boot['method']}, {boot['n_boot']} resamples of which {boot['n_dropped']} "
            "drew too few units to identify the plane (left out).", "",
            *table(["coefficient", f"fitted [{doc.pct} t, rows independent]", f"two-way bootstrap [{doc.pct}]",
                    "published [S]", "fitted / published", "published inside two-way interval"], rows),
            *[verdicts.plane_coefficient_sentence(name, tests[name]["verdict"], tests[name]["estimate"],
                                                  tests[name]["interval"], EXPECTED_SIGNS[name], g["num_targets"],
                                                  g["num_drafts"]) for name in EXPECTED_SIGNS],
            verdicts.shared_units("B", lin["fit"]["ci"]["B"], lin["fit"]["nobs"], g["num_targets"],
                                  "target perplexities"),
            verdicts.published_transfer([n for n, t in tests.items() if not t["published_inside"]]), "",
            *table(["form", "A [two-way]", "B [two-way]", "C [two-way]", "R2", "AIC", "RMSE, draft left out",
                    "RMSE, target left out"], form_rows),
            verdicts.plane_form_sentence(g["preferred_form"], g["aic_log_minus_linear"],
                                         {u: (g["forms"]["linear"]["left_out_rmse"][u],
                                              g["forms"]["log"]["left_out_rmse"][u]) for u in LEFT_OUT}), "",
            f"**Verdict at {key}: {g['verdict']}** ("
            + ", ".join(f"{n}: {tests[n]['verdict']}" for n in EXPECTED_SIGNS) + ").", ""]


SECTION = Section("plane", FILES, analyse, render, summary, optional=frozenset(AT_SCALE.values()))
EXPERIMENT = Experiment(NAME, "alpha vs draft and target perplexity over a target x draft grid (SDSL plane)",
                        models, measure, sections=(SECTION,))
