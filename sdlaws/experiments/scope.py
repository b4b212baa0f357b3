"""The closing section of the results document: what was measured (device, dates, models, corpus, workload) and
the limits that follow from it. It reads every ``spec`` and ``ppl`` table the other sections load, plus the run
metadata and the corpus manifest of the suites (:data:`FILES`). At-scale runs (:mod:`sdlaws.experiments.at_scale`)
count among the models and rows; their corpus is described in their own sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sdlaws import rates
from sdlaws.experiments import at_scale, ppl_plane, pretrain_tokens, verdicts
from sdlaws.experiments.registry import Section
from sdlaws.experiments.reporting import Analysis, Doc, Tables, listed, tok
from sdlaws.formatting import pct
from sdlaws.plan.cost import short_name

FILES = {"acceptance_run": pretrain_tokens.FILES["acceptance_run"], "throughput_run": ("throughput/run.json", "json"),
         "manifest": ("corpus-manifest.json.gz", "json"), "plane_ppl": ppl_plane.FILES["plane_ppl"],
         "pair_ppl": ("throughput/ppl.csv", "ppl")}
#: What identifies one configuration measured on the same prompts (for acceptance across batch sizes).
CONFIG_KEYS = ["target_name", "draft_name", "method", "num_spec_tokens", "tree_topk", "prompt_set", "num_prompts"]


def analyse(tables: Tables) -> Analysis:
    """Device, dates, models (parameters, final token budgets), corpus, workload, repeats, perplexity sample."""
    spec = pd.concat([*tables.of_kind("spec"), *(t[t["status"].eq("ok")] for t in tables.of_kind("spec-all"))],
                     ignore_index=True)
    ppl = pd.concat(tables.of_kind("ppl"), ignore_index=True)
    runs = ppl.assign(run=ppl["model_name"].str.replace(r"/step-\d+$", "", regex=True))
    final_tokens = runs.groupby("run")["model_pretrain_tokens"].max()
    throughput = tables["throughput_run"]
    corpus = throughput["corpus"]
    repeats = spec.groupby([*CONFIG_KEYS, "batch_size", "temperature", "experiment"], dropna=False).size()
    largest = tables["pair_ppl"].loc[tables["pair_ppl"]["model_params"].idxmax(), "model_name"]
    scaled = [runs for runs in (pretrain_tokens.RUNS, ppl_plane.RUNS) if runs.at_scale["spec"] in tables]
    facts = {"at_scale_sources": [runs.source(runs.at_scale) for runs in scaled],
             "at_scale_stopped_early": any(at_scale.dataset(tables, runs, runs.at_scale)["stopped_early"]
                                           for runs in scaled)}
    return Analysis({**(facts if scaled else {}),  # only once committed
        "gpu_name": sorted(spec["gpu_name"].unique().tolist()), "dtype": sorted(spec["dtype"].unique().tolist()),
        "dates": sorted({str(t)[:10] for t in spec["timestamp_utc"]}),
        "measurement_git_sha": sorted(spec["git_sha"].astype(str).unique().tolist()),
        "num_models": int(runs["run"].nunique()), "num_checkpoints": int(runs["model_name"].nunique()),
        "params_range": [float(ppl["model_params"].min()), float(ppl["model_params"].max())],
        "final_tokens_range": [float(final_tokens.min()), float(final_tokens.max())],
        "corpus_train_tokens": int(corpus["splits"]["train"]["num_tokens"]),
        "corpus_train_files": int(corpus["splits"]["train"]["num_files"]),
        "vocab_size": int(throughput["scale"]["vocab_size"]),
        "max_new_tokens": sorted(int(v) for v in spec["max_new_tokens"].unique()),
        "prompt_tokens": int(throughput["scale"]["prompt_tokens"]),
        "num_configurations": int(len(repeats)), "max_repeats": int(repeats.max()),
        "acceptance_across_batches": acceptance_across_batches(spec),
        "stopped_early": bool(any(c.get("stopped_early") for run in ("acceptance_run", "throughput_run")
                                  for cks in tables[run]["train"]["checkpoints"].values() for c in cks)),
        "ppl_sample": ppl_sample(tables["manifest"], tables["pair_ppl"], throughput, largest)})


def acceptance_across_batches(spec: pd.DataFrame) -> dict[str, int]:
    """How often the same configuration on the same prompts, measured at several batch sizes at T = 0, produced
    identical acceptance counts (bf16 kernels differ between batch shapes, which could change greedy tokens)."""
    cold = spec[spec["method"].ne("ar") & spec["temperature"].eq(0.0)]
    groups = [g for _, g in cold.groupby(CONFIG_KEYS) if g["batch_size"].nunique() > 1]
    same = sum(g["num_accepted_tokens"].nunique() == 1 and g["num_accepted_per_pos"].astype(str).nunique() == 1
               for g in groups)
    return {"configurations": len(groups), "identical": int(same)}


def ppl_sample(manifest: dict[str, Any], ppl: pd.DataFrame, run: dict[str, Any], model_name: str) -> dict[str, Any]:
    """What the perplexities were measured on: the first ``num_eval_tokens`` of the held-out split.

    The split is written file by file in manifest order (EOS after each file), so the manifest tells which files
    the sample holds. Also compares ``model_name``'s last training loss (``run.json``) with its held-out NLL.
    """
    num_eval = int(ppl["num_eval_tokens"].max())
    covered, files = 0, []
    for entry in (e for e in manifest["files"] if e["split"] == "test"):
        if covered >= num_eval:
            break
        files.append(entry)
        covered += int(entry["num_tokens"]) + 1  # + the EOS written after the file
    largest = max(files, key=lambda e: e["num_tokens"])
    row = ppl[ppl["model_name"].astype(str).eq(str(model_name))].iloc[-1]
    key = Path(str(model_name)).parent.name
    return {"num_eval_tokens": num_eval, "num_files": len(files),
            "test_split_tokens": int(manifest["splits"]["test"]["num_tokens"]),
            "largest_file": largest["label"], "largest_share": min(1.0, largest["num_tokens"] / num_eval),
            "model": short_name(model_name),
            "train_loss_nats": float(run["train"]["checkpoints"][key][-1]["train_loss"]),
            "heldout_nll_nats": float(rates.nll_per_token(row))}


def summary(d: dict) -> list[list[str]]:
    """No summary row: the limits qualify every other row."""
    return []


def render(d: dict, doc: Doc) -> list[str]:
    """Limits: scale, corpus, device and engine, repeats, the perplexity sample, secondary sources."""
    p, agree = d["ppl_sample"], d["acceptance_across_batches"]
    once = d["max_repeats"] == 1
    return ["## Limits", "",
            f"- Tiny models: {d['num_models']} models ({d['num_checkpoints']} checkpoints) of "
            f"{tok(d['params_range'][0])} to {tok(d['params_range'][1])} parameters, final budgets "
            f"{tok(d['final_tokens_range'][0])} to {tok(d['final_tokens_range'][1])} tokens"
            + _md_stopped_early(d) + ".",
            f"- {_md_corpus(d)}: Python source ({d['corpus_train_files']} training files, "
            f"{tok(d['corpus_train_tokens'])} tokens, vocabulary {d['vocab_size']}); prompts are "
            f"{d['prompt_tokens']}-token windows of held-out files, {listed(d['max_new_tokens'])} new tokens."
            + _md_at_scale_corpus(d),
            f"- Device: {listed(d['gpu_name'])}, sdlaws's engine (static batches with CUDA graphs), "
            f"{listed(d['dtype'])}. Kernels differ between batch shapes, which can change greedy tokens; the T = 0 "
            f"acceptance counts of the same prompts were identical across batch sizes in {agree['identical']} of "
            f"{agree['configurations']} configurations measured at several batch sizes.",
            f"- Repeats: {d['num_configurations']} configurations, each measured "
            + ("once; intervals cover the fit, not run-to-run variation." if once else
               f"up to {d['max_repeats']} times."),
            f"- {_md_perplexities(d)} are measured on the first {tok(p['num_eval_tokens'])} tokens of the "
            f"{tok(p['test_split_tokens'])}-token held-out split: {p['num_files']} files, "
            f"{pct(100 * p['largest_share'])} of its tokens from one file (`{p['largest_file']}`); the split removes "
            "exact duplicates only, so near-copies of training files remain. "
            + verdicts.heldout_loss(p["heldout_nll_nats"], p["train_loss_nats"], p["model"])
            + " Every model is scored on the same sample, so perplexities compare models with each other, not with "
            "other corpora.",
            "- Published coefficients compared here are secondary [S] digests (see `data/README.md`).", ""]


def _md_corpus(d: dict) -> str:
    """Whose corpus the corpus line describes: the only one, or the small-budget runs' one."""
    return "The small-budget runs' corpus" if "at_scale_sources" in d else "One corpus"


def _md_stopped_early(d: dict) -> str:
    """Which runs the time budget cut short, from each dataset's training records."""
    if "at_scale_sources" not in d:
        return " (training stopped early at the time budget)" if d["stopped_early"] else ""
    small, scaled = d["stopped_early"], d["at_scale_stopped_early"]
    if small == scaled:
        return " (training stopped early at the time budget in the small-budget and the at-scale runs)" if small else ""
    cut, done = ("small-budget", "at-scale") if small else ("at-scale", "small-budget")
    return f" (the {cut} runs' training stopped early at the time budget; the {done} runs finished theirs)"


def _md_perplexities(d: dict) -> str:
    """Whose perplexity sample the bullet describes (the at-scale runs score a sample drawn across files)."""
    return "The small-budget runs' perplexities" if "at_scale_sources" in d else "Perplexities"


def _md_at_scale_corpus(d: dict) -> str:
    """The at-scale runs' own corpus, where they are."""
    if "at_scale_sources" not in d:
        return ""
    runs = listed(d["at_scale_sources"], lambda path: f"`measurements/{path}`")
    return f" The at-scale runs ({runs}) have their own corpus, described in their sections."


SECTION = Section("scope", FILES, analyse, render, summary)
