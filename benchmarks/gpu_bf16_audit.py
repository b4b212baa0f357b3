"""bf16 losslessness audit: does greedy speculative decoding reproduce greedy AR decoding token for token on a GPU?

Greedy speculative decoding is exact in exact arithmetic, but in bf16 a verification pass (gamma + 1 tokens per
row, or a tree) runs other kernels than an AR step (1 token), and a batch of 64 other kernels than a batch of 1,
so logits may differ in their last bits and flip an argmax whose top-2 margin is that small. This audit measures
how often that happens and tells such flips apart from an algorithm bug by the margin at the first difference.

On a random Llama-3.1-8B target (bf16, 128-token random prompts, 256 new tokens, T = 0), for chain (gamma 4) and
tree (top-2, depth 4) decoding at batch 1 (the first 8 prompts, one at a time) and batch 64 (64 prompts), with two
drafts: a random Llama-3.2-1B (it almost never agrees with the target, so every step commits the target's bonus
token from a 5-token verification) and the target itself (``self``: it almost always agrees, so the accept path
runs every step). Each sequence is compared with

- the engine's own AR output at the same batch size (``SpecDecoder(method="ar")``), and
- Hugging Face greedy decoding, ``model.generate(do_sample=False)``, of all prompts in one batch (no padding:
  the prompts share one length);

and where they differ, the first differing position is recorded with the target's top-2 logit margin there: one
batch-1 forward of the prompt and the common prefix, in the run's dtype.

:func:`verdict` classifies a speculative configuration against a reference measured in the same run: the margins
where the engine's AR output first leaves HF greedy's at the same batch size (no speculation, so pure kernel
differences). The configuration's margins where it first leaves the engine's AR are ``numerical`` when they are
not stochastically larger than the reference's (one-sided Mann-Whitney U test, ``bug`` when p < :data:`ALPHA`),
``identical`` without a difference, and ``undecided`` where the reference has no difference or there are too few
for the test to reach p < :data:`ALPHA` at all. The AR rows are the references (verdict ``reference``).

Outputs under ``--out``: ``tokens.jsonl`` (every decoded sequence, one line per configuration: the resume
point), ``audit.csv`` (one row per sequence and configuration), ``audit-summary.csv`` and ``audit.md`` (one row
per configuration), ``audit.json`` (provenance, workload, summary, overall verdict). ``--smoke`` runs it on CPU
in fp32 with tiny shapes, where greedy decoding is exact and every sequence must be equal.

Usage::

    python3 benchmarks/gpu_bf16_audit.py --out $OUT              # one H200: about 4 minutes
    python3 benchmarks/gpu_bf16_audit.py --smoke --out out/audit # CPU, fp32, seconds
    python3 benchmarks/gpu_bf16_audit.py --report-only --out $OUT # the verdicts again from audit.csv/json, no model
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd

from sdlaws import io
from sdlaws.provenance import describe, git_sha, provenance

#: Significance of the one-sided Mann-Whitney U test behind a ``bug`` verdict. A margin threshold typed in
#: advance cannot be right: how close a near-tie kernels flip depends on the model's logit scale and the kernels,
#: so the reference is measured in the same run instead.
ALPHA = 0.01
#: The draft spec meaning "the target drafts for itself".
SELF = "self"
#: Verdicts, least serious first; the AR rows are the references and have none of these.
VERDICTS = ("identical", "numerical", "undecided", "bug")
REFERENCE = "reference"


@dataclass(frozen=True)
class AuditWorkload:
    """Models, shapes and lengths of an audit."""

    target: str = "random:llama-3.1-8b"
    drafts: tuple[str, ...] = ("random:llama-3.2-1b", SELF)
    dtype: str = "bfloat16"
    device: str = "cuda"
    prompt_len: int = 128
    new_tokens: int = 256
    big_batch: int = 64     # prompts decoded together; also the number of prompts
    single: int = 8         # the first prompts, decoded one at a time at batch 1
    gamma: int = 4
    tree_topk: int = 2
    alpha: float = ALPHA


#: The CPU run: tiny shapes in fp32 (an untied target, so that its greedy output is not its last token repeated).
SMOKE = AuditWorkload(target="random:tiny?tie_word_embeddings=false",
                      drafts=("random:tiny?num_hidden_layers=1", SELF), dtype="float32", device="cpu",
                      prompt_len=8, new_tokens=12, big_batch=4, single=2)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (resumed when it holds tokens.jsonl)")
    p.add_argument("--smoke", action="store_true", help="CPU, fp32, random:tiny shapes")
    p.add_argument("--new-tokens", type=int, help="new tokens per sequence (default 256)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"),
                   help="weights and activations (default bfloat16); float32 is the exact reference run: a "
                        "difference that survives it is not bf16 rounding")
    p.add_argument("--big-batch", type=int, help="prompts, decoded together at the big batch size (default 64)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild audit-summary.csv, audit.json and audit.md from --out's audit.csv and audit.json")
    args = p.parse_args(argv)
    for flag, value in (("--new-tokens", args.new_tokens), ("--big-batch", args.big_batch)):
        if value is not None and value < 1:
            p.error(f"{flag} must be at least 1, got {value}")  # one line, exit 2, before any model loads
    missing = [name for name in ("audit.csv", "audit.json") if not (args.out / name).is_file()]
    if args.report_only and missing:
        p.error(f"--report-only needs {' and '.join(missing)} in {args.out}")  # one line, exit 2
    return args


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where ``a`` and ``b`` differ (the shorter one's length if one is a prefix), or
    None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def smallest_p(n: int, m: int) -> float:
    """The smallest one-sided p the U test can give for ``n`` values against ``m``: every one above every
    reference value, no ties, 1 / C(n + m, n). Where it is not below alpha the test cannot say ``bug``."""
    return 1.0 / math.comb(n + m, n)


def margin_test(margins: list[float], reference: list[float]) -> float:
    """One-sided Mann-Whitney U p-value that ``margins`` tend to be larger than ``reference`` (NaN for none).

    A wrong acceptance commits a token the target does not rank first, wherever its margin lies; a kernel
    difference only flips near-ties. So a bug shows as first-difference margins shifted up from the reference's.
    """
    from scipy.stats import mannwhitneyu

    if not margins or not reference:
        return float("nan")
    return float(mannwhitneyu(margins, reference, alternative="greater").pvalue)


def verdict(margins: list[float], reference: list[float], alpha: float = ALPHA) -> str:
    """``identical`` without differences; ``undecided`` when the reference has none or the test cannot reach
    ``alpha`` with this many; ``bug`` when the margins are larger than the reference's (p < ``alpha``); else
    ``numerical``.

    No rule on the largest margin alone: the reference's maximum is an extreme of few values (8 sequences at
    batch 1) and a factor on it would be one more constant typed in advance, with a false-alarm rate this run
    cannot calibrate.
    """
    if not margins:
        return "identical"
    if not reference or smallest_p(len(margins), len(reference)) >= alpha:
        return "undecided"
    return "bug" if margin_test(margins, reference) < alpha else "numerical"


def worst(verdicts) -> str:
    """The most serious of several verdicts (``identical`` for none; references are not verdicts)."""
    return max((v for v in verdicts if v in VERDICTS), key=VERDICTS.index, default="identical")


def configurations(w: AuditWorkload) -> list[tuple[str, str | None, str, int]]:
    """(name, draft, method, batch size) of every decoded configuration; AR first (the references)."""
    runs = [(f"ar b{b}", None, "ar", b) for b in (1, w.big_batch)]
    for draft in w.drafts:
        label = SELF if draft == SELF else draft.removeprefix("random:")
        runs += [(f"{method} {label} b{b}", draft, method, b) for method in ("chain", "tree") for b in (1, w.big_batch)]
    return runs


def batches_of(w: AuditWorkload, prompts: list[list[int]], batch: int) -> list[list[list[int]]]:
    """Batch 1: the first ``single`` prompts one at a time; the large batch: every prompt together."""
    return [[p] for p in prompts[: w.single]] if batch == 1 else [prompts]


def decode(w: AuditWorkload, target, draft, method: str, batch: int, prompts: list[list[int]]) -> list[list[int]]:
    """New tokens of each sequence from sdlaws's engine (greedy; the first call captures the CUDA graphs)."""
    from sdlaws.measure.engine import DecodeConfig, SpecDecoder

    config = DecodeConfig(method=method, num_spec_tokens=w.gamma, tree_topk=1 if method == "chain" else w.tree_topk,
                          max_new_tokens=w.new_tokens)
    decoder = SpecDecoder(target, draft, config, max_prompt_len=w.prompt_len)
    return [seq for group in batches_of(w, prompts, batch) for seq in decoder.generate(group)[0]]


def hf_greedy(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """New tokens of HF greedy ``generate(do_sample=False)``, all prompts in one batch (equal lengths, no pad)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def read_tokens(path: Path) -> dict[str, list[list[int]]]:
    """Decoded sequences by configuration name (a torn last line of a cut run is dropped)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[row["config"]] = row["tokens"]
    return out


def decode_all(w: AuditWorkload, target, drafts: dict, prompts: list[list[int]], tokens_jsonl: Path) -> None:
    """Decode every configuration not yet in ``tokens.jsonl`` (HF first), appending one line each."""
    from sdlaws.measure.models import free_device_memory

    have = read_tokens(tokens_jsonl)
    todo = [("hf greedy", None, "hf", w.big_batch)] + configurations(w)
    for name, draft, method, batch in todo:
        if name in have:
            continue
        seqs = (hf_greedy(target, prompts, w.new_tokens) if method == "hf"
                else decode(w, target, drafts.get(draft), method, batch, prompts))
        with tokens_jsonl.open("a") as f:
            f.write(json.dumps({"config": name, "tokens": seqs}) + "\n")
        print(f"decoded {name}", flush=True)
        free_device_memory(w.device)


class MarginProbe:
    """The target's top-2 logit margin after a prefix, one batch-1 forward per distinct prefix."""

    def __init__(self, model):
        self.model, self.cache = model, {}

    def __call__(self, ids: list[int]) -> float:
        import torch

        key = tuple(ids)
        if key not in self.cache:
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
            top = torch.topk(logits, 2).values
            self.cache[key] = float(top[0] - top[1])
        return self.cache[key]


def compare(seq: list[int], ref: list[int], prompt: list[int], probe) -> dict:
    """Equality of one sequence with a reference; where they differ, the first position, both tokens and the
    margin after the common prefix."""
    i = first_difference(seq, ref)
    if i is None:
        return {"equal": True, "first_diff": None, "token": None, "ref_token": None, "margin": None}
    return {"equal": False, "first_diff": i, "token": seq[i] if i < len(seq) else None,
            "ref_token": ref[i] if i < len(ref) else None, "margin": probe(prompt + ref[:i])}


def audit_rows(w: AuditWorkload, tokens: dict, prompts: list[list[int]], probe) -> pd.DataFrame:
    """One row per decoded sequence: against the engine's AR at its batch size and against HF greedy."""
    rows = []
    for name, draft, method, batch in configurations(w):
        if name not in tokens or f"ar b{batch}" not in tokens or "hf greedy" not in tokens:
            continue  # a cut run: what was not decoded is not audited
        for k, seq in enumerate(tokens[name]):
            row = {"config": name, "draft": draft or "", "method": method, "batch_size": batch, "prompt": k}
            for ref, ref_seq in (("ar", tokens[f"ar b{batch}"][k]), ("hf", tokens["hf greedy"][k])):
                row.update({f"{key}_{ref}": v for key, v in compare(seq, ref_seq, prompts[k], probe).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def margin_step(margins) -> float | None:
    """The largest power of two (at most 1) every margin is a multiple of: margins read off bf16 logits of
    magnitude 4-8 come in steps of their ulp, 2^-5. None without a nonzero margin."""
    nonzero = [float(m) for m in margins if m and not pd.isna(m)]
    if not nonzero:
        return None
    step = 1.0
    while step > 2.0 ** -24 and any(math.fmod(m, step) for m in nonzero):
        step /= 2
    return step


def reference_margins(rows: pd.DataFrame, batch: int) -> list[float]:
    """Margins where the engine's AR at ``batch`` first leaves HF greedy: kernel differences alone."""
    ar = rows[rows["method"].eq("ar") & rows["batch_size"].eq(batch)]
    return ar["margin_hf"].dropna().tolist()


def summarize(rows: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per configuration: sequences, fractions equal to AR and to HF, the earliest difference from AR, the
    first-difference margins against AR (count, median, max) and the reference's at the same batch size, the
    test's p-value and the verdict (``reference`` for the AR rows)."""
    out = []
    for name, g in rows.groupby("config", sort=False):
        batch = int(g["batch_size"].iloc[0])
        ar = g["method"].iloc[0] == "ar"
        margins, reference = g["margin_ar"].dropna().tolist(), reference_margins(rows, batch)
        v = REFERENCE if ar else verdict(margins, reference, alpha)
        out.append({"config": name, "method": g["method"].iloc[0], "batch_size": batch, "sequences": len(g),
                    "equal_ar": g["equal_ar"].mean(), "equal_hf": g["equal_hf"].mean(),
                    "first_diff_ar_min": g["first_diff_ar"].min(), "differences_ar": len(margins),
                    "median_margin_ar": g["margin_ar"].median(), "max_margin_ar": g["margin_ar"].max(),
                    "max_margin_hf": g["margin_hf"].max(), "reference_differences": len(reference),
                    "reference_median_margin": pd.Series(reference, dtype=float).median(),
                    "reference_max_margin": max(reference, default=float("nan")),
                    "p_value": margin_test(margins, reference) if v in ("numerical", "bug") else float("nan"),
                    "verdict": v})
    return pd.DataFrame(out)


def markdown(info: dict, summary: pd.DataFrame) -> str:
    """Summary table with its provenance line, ready to paste into ``docs/benchmarks.md``."""
    w = info["workload"]
    head = (f"{describe(info)}; target {w['target']}, {w['dtype']}, "
            f"{w['prompt_len']}-token prompts, {w['new_tokens']} new tokens, T = 0; margins against engine AR vs "
            f"the reference (engine AR vs HF greedy, same batch), one-sided Mann-Whitney U, alpha {w['alpha']}; "
            f"every margin a multiple of {_cell(info.get('margin_step'), '{:g}')}; verdict: **{info['verdict']}**.")
    lines = [head, "", "| configuration | batch | sequences | = engine AR | = HF greedy | earliest difference "
             "| differences | margin median / max | reference: differences, median / max | p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.config} | {r.batch_size} | {r.sequences} | {r.equal_ar:.0%} | {r.equal_hf:.0%} | "
                     f"{_cell(r.first_diff_ar_min, '{:.0f}')} | {r.differences_ar} | "
                     f"{_cell(r.median_margin_ar)} / {_cell(r.max_margin_ar)} | {r.reference_differences}, "
                     f"{_cell(r.reference_median_margin)} / {_cell(r.reference_max_margin)} | "
                     f"{_cell(r.p_value, '{:.3g}')} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def _cell(value, fmt: str = "{:.3f}") -> str:
    """A number formatted, or a dash where there is none."""
    return "-" if value is None or pd.isna(value) else fmt.format(value)


def load(w: AuditWorkload):
    """The target, the drafts by spec (``self`` is the target), and the prompts."""
    from sdlaws.measure.models import load_model
    from sdlaws.measure.prompts import load_prompts

    target, _, _ = load_model(w.target, dtype=w.dtype, device=w.device)
    drafts = {d: target if d == SELF else load_model(d, dtype=w.dtype, device=w.device)[0] for d in w.drafts}
    prompts = load_prompts("random", num_prompts=w.big_batch, max_prompt_len=w.prompt_len,
                           vocab_size=target.config.get_text_config().vocab_size).token_ids
    return target, drafts, prompts


#: Provenance keys of ``audit.json`` that describe the decoding run (kept when only the report is rebuilt).
RUN_KEYS = ("timestamp_utc", "git_sha", "sdlaws_version", "torch_version", "transformers_version", "gpu_name")


def write_report(w: AuditWorkload, rows: pd.DataFrame, run: dict, out: Path) -> dict:
    """``audit-summary.csv``, ``audit.json`` and ``audit.md`` from the per-sequence rows; ``run`` is the
    decoding run's provenance, and ``report_git_sha`` the code that drew the verdicts."""
    summary = summarize(rows, w.alpha)
    summary.to_csv(out / "audit-summary.csv", index=False)
    info = {**{k: run.get(k, "") for k in RUN_KEYS}, "report_git_sha": git_sha(), "workload": asdict(w),
            "verdict": worst(summary["verdict"]),
            "margin_step": margin_step(pd.concat([rows["margin_ar"], rows["margin_hf"]])),
            "summary": summary.to_dict(orient="records")}
    io.save_json(info, out / "audit.json")
    (out / "audit.md").write_text(markdown(info, summary))
    return info


def report_only(out: Path) -> dict:
    """The report again from ``audit.csv`` and the run's ``audit.json``: no model, no GPU."""
    earlier = json.loads((out / "audit.json").read_text())
    known = {f.name for f in fields(AuditWorkload)}
    # a report of an earlier rule carries its settings (a typed margin): the workload keeps only what it knows
    w = AuditWorkload(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in earlier.get("workload", {}).items() if k in known})
    return write_report(w, pd.read_csv(out / "audit.csv"), earlier, out)


def main(argv=None) -> dict:
    """Decode what ``tokens.jsonl`` lacks, then compare and write the audit."""
    args = parse_args(argv)
    if args.report_only:
        info = report_only(args.out)
        print((args.out / "audit.md").read_text())
        return info
    w = SMOKE if args.smoke else AuditWorkload()
    chosen = (("new_tokens", args.new_tokens), ("dtype", args.dtype), ("big_batch", args.big_batch))
    w = replace(w, **{k: v for k, v in chosen if v is not None})
    if w.single > w.big_batch:
        w = replace(w, single=w.big_batch)  # the batch-1 prompts are the first of the big batch's
    args.out.mkdir(parents=True, exist_ok=True)
    target, drafts, prompts = load(w)
    tokens_jsonl = args.out / "tokens.jsonl"
    decode_all(w, target, drafts, prompts, tokens_jsonl)
    rows = audit_rows(w, read_tokens(tokens_jsonl), prompts, MarginProbe(target))
    rows.to_csv(args.out / "audit.csv", index=False)
    from sdlaws.measure.models import device_name

    info = write_report(w, rows, provenance(device_name(str(next(target.parameters()).device))), args.out)
    print((args.out / "audit.md").read_text())
    return info


if __name__ == "__main__":
    main()
