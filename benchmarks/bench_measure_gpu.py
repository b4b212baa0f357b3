"""One-command GPU benchmark of ``sdlaws measure`` (targets in ``docs/benchmarks.md``).

Reports, for a target/draft pair sharing a tokenizer (``--target``/``--draft``, or ``--train-quick`` to train a
small pair from scratch with ``sdlaws train`` first):

(a) tokens/s of sdlaws's :class:`~sdlaws.measure.engine.SpecDecoder` (chain, gamma) versus Hugging Face
    ``generate(assistant_model=draft)`` with the same gamma pinned, at batch size 1, greedy, same prompts;
(b) a consistency check, not a prediction: the measured speedup over sdlaws's own AR baseline versus the
    speedup reconstructed from the same run's alpha and step times, ``tau(alpha, gamma) * t_ar / (gamma * t_draft + t_verify)`` (Leviathan et al. 2023, Thm 3.8
    with measured step times; ``tau`` from :func:`sdlaws.rates.expected_tokens_chain`);
(c) AR decode time per token at batch size 1 of ``--ar-model`` (default ``random:llama-3.2-1b``, 1.24B
    parameters) versus the memory-bound floor: the bytes a decode step must read (matmul weights, i.e. every
    weight but an untied input-embedding table, which is a lookup, plus the KV cache of the mean context) over the
    copy bandwidth measured in the same run (:func:`floor_bytes`).

``--floor-from summary.json`` recomputes (c) from an earlier run's summary without a GPU.

Writes ``spec.csv`` and ``steps.csv`` (schema tables), ``hw.json`` (hardware profile) and ``summary.json`` to
``--out``. Budget: under 8 minutes on an H100 (with ``--train-quick``: about 3 of them training).

Usage::

    python benchmarks/bench_measure_gpu.py --target runs/target --draft runs/draft --out out/bench
    python benchmarks/bench_measure_gpu.py --train-quick --out out/bench
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sdlaws import io, rates
from sdlaws.measure.config import MeasureConfig
from sdlaws.measure.hf_baseline import hf_assisted_generate
from sdlaws.measure.hwbench import StepSweep, measure_hardware, measure_steps
from sdlaws.measure.models import load_model
from sdlaws.measure.prompts import load_prompts
from sdlaws.measure.sweep import run_sweep

EXPERIMENT = "bench_measure_gpu"
#: Bytes per parameter of the dtypes the benchmark can run in.
BYTES_PER_PARAM = {"bfloat16": 2, "float16": 2, "float32": 4}
#: The benchmark's targets (docs/benchmarks.md), quoted in the summary: sdlaws vs HF assisted generation, prediction error, bandwidth share.
GOALS = {"min_speedup_vs_hf": 3.0, "max_prediction_error": 0.10, "min_bandwidth_fraction": 0.80}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", help="target model spec (local dir, hub id, random:NAME)")
    p.add_argument("--draft", help="draft model spec sharing the target's tokenizer")
    p.add_argument("--train-quick", action="store_true", help="train a small target/draft pair first")
    p.add_argument("--train-seconds", type=float, default=150.0, help="training time limit with --train-quick")
    p.add_argument("--gamma", type=int, default=4, help="draft tokens per step")
    p.add_argument("--prompts", default="code", help="prompt set (default: code, present on every machine)")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-len", type=int, default=256)
    p.add_argument("--ar-model", default="random:llama-3.2-1b", help="model of the bandwidth check (c)")
    p.add_argument("--ar-new-tokens", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=Path("out/bench_measure_gpu"))
    p.add_argument("--floor-from", type=Path, help="recompute (c) from this summary.json (no GPU) and exit")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sdlaws-bench",
                   help="scratch folder for --train-quick's corpus and models (kept out of --out)")
    args = p.parse_args(argv)
    if not args.train_quick and not (args.target and args.draft) and args.floor_from is None:
        p.error("pass --target and --draft, or --train-quick (or --floor-from SUMMARY)")
    return args


def train_quick_pair(work: Path, seconds: float) -> tuple[str, str]:
    """Build a Python-source corpus and train a 8x512 target and a 2x256 draft on it (``sdlaws train``)."""
    try:
        from sdlaws.train.corpus import CorpusConfig, build_corpus
        from sdlaws.train.families import TrainSpec
        from sdlaws.train.trainer import TrainConfig, train_family
    except ImportError as exc:
        raise SystemExit(f"--train-quick needs sdlaws.train ({exc}); pass --target and --draft instead")
    # 20M train tokens and an 8M-byte tokenizer sample keep the corpus build to about a minute.
    corpus = build_corpus(work / "corpus", CorpusConfig(vocab_size=8192, max_tokens=20_000_000,
                                                        tokenizer_sample_bytes=8_000_000))
    specs = [TrainSpec(layers=8, hidden_size=512, tokens=200_000_000, name="target"),
             TrainSpec(layers=2, hidden_size=256, tokens=200_000_000, name="draft")]
    result = train_family(specs, corpus, work / "models", TrainConfig(seq_len=512, batch_size=64,
                                                                      time_limit_s=seconds))
    return str(result.final("target").path), str(result.final("draft").path)


def measure_pair(args, target: str, draft: str, spec_csv: Path) -> dict:
    """(a) and (b): sdlaws chain + AR rows, and HF assisted generation, at batch size 1 on the same prompts."""
    config = MeasureConfig(targets=(target,), drafts=(draft,), num_spec_tokens=(args.gamma,), topks=(1,),
                           batch_sizes=(1,), temperatures=(0.0,), prompts=args.prompts, num_prompts=args.num_prompts,
                           max_new_tokens=args.max_new_tokens, max_prompt_len=args.max_prompt_len,
                           dtype=args.dtype, device=args.device, experiment=EXPERIMENT)
    print(run_sweep(config, spec_csv).summary())
    df = rates.derive(io.read_measurements(spec_csv, table="spec", ok_only=True))
    rows = df[df["target_name"].eq(target) & df["experiment"].eq(EXPERIMENT) & df["batch_size"].eq(1)]
    ar = rows[rows["method"].eq("ar")].iloc[-1]
    chain = rows[rows["method"].eq("chain") & rows["num_spec_tokens"].eq(args.gamma)].iloc[-1]
    hf = _hf_tokens_per_s(args, config, target, draft)
    return {"sdlaws_chain_tokens_per_s": chain["tokens_per_s"], "sdlaws_ar_tokens_per_s": ar["tokens_per_s"],
            "hf_assisted": hf, "speedup_vs_hf": chain["tokens_per_s"] / hf["tokens_per_s"],
            **_prediction(ar, chain, args.gamma)}


def _hf_tokens_per_s(args, config: MeasureConfig, target: str, draft: str) -> dict:
    """HF ``generate(assistant_model=...)`` on the prompts the sweep used (same set, seed, truncation)."""
    t_model, tokenizer, _ = load_model(target, dtype=args.dtype, device=args.device)
    d_model, _, _ = load_model(draft, dtype=args.dtype, device=args.device)
    prompts = load_prompts(config.prompts, tokenizer, num_prompts=config.num_prompts, seed=config.seed,
                           max_prompt_len=config.max_prompt_len, chat_template=config.chat_template,
                           vocab_size=t_model.config.get_text_config().vocab_size)
    return hf_assisted_generate(t_model, d_model, prompts.token_ids, gamma=args.gamma,
                                max_new_tokens=args.max_new_tokens).to_dict()


def _prediction(ar, chain, gamma: int) -> dict:
    """Predicted decode speedup from the chain row's alpha and step times, next to the measured ones."""
    tau = float(rates.expected_tokens_chain(chain["alpha_mle"], gamma))
    t_draft = chain["draft_time_s"] / (chain["num_steps"] * gamma)    # one draft forward
    t_verify = chain["verify_time_s"] / chain["num_steps"]           # one target verify of gamma + 1 tokens
    t_ar = ar["verify_time_s"] / ar["num_steps"]                      # one target decode forward
    predicted = tau * t_ar / (gamma * t_draft + t_verify)
    measured_decode = ar["tpot_s"] / chain["tpot_s"]                  # decode phase only, like the prediction
    return {"alpha_mle": chain["alpha_mle"], "tau_measured": chain["mean_acceptance_length"], "tau_from_alpha": tau,
            "t_draft_s": t_draft, "t_verify_s": t_verify, "t_ar_s": t_ar, "predicted_speedup": predicted,
            "measured_decode_speedup": measured_decode, "measured_speedup": chain["speedup"],
            "prediction_error": predicted / measured_decode - 1.0}


def floor_bytes(model: str, batch_size: int, context_tokens: float, dtype: str) -> float:
    """Bytes one decode step must read: matmul weights + the KV cache of ``context_tokens`` per row."""
    from sdlaws.roofline import kv_cache_bytes, named_shape

    shape = named_shape(model)
    return shape.matmul_params * BYTES_PER_PARAM[dtype] + float(kv_cache_bytes(shape, batch_size, context_tokens,
                                                                               dtype))


def bandwidth_floor(model: str, dtype: str, prompt_len: int, new_tokens: int, hbm_bytes_per_s: float,
                    ar_time_per_token_s: float) -> dict:
    """(c)'s floor at batch 1 (mean context: prompt + half the new tokens) and the measured share of it."""
    nbytes = floor_bytes(model, 1, prompt_len + new_tokens / 2, dtype)
    bound_s = nbytes / hbm_bytes_per_s
    return {"floor_bytes": nbytes, "bound_time_per_token_s": bound_s,
            "bandwidth_fraction": bound_s / ar_time_per_token_s}


def measure_bandwidth(args, hbm_bytes_per_s: float, spec_csv: Path, steps_csv: Path) -> dict:
    """(c): AR decode time per token of ``--ar-model`` at batch 1 versus model bytes / measured bandwidth."""
    config = MeasureConfig(targets=(args.ar_model,), prompts="random", num_prompts=4, max_prompt_len=128,
                           max_new_tokens=args.ar_new_tokens, dtype=args.dtype, device=args.device,
                           experiment=EXPERIMENT)
    print(run_sweep(config, spec_csv).summary())
    df = rates.derive(io.read_measurements(spec_csv, table="spec", ok_only=True))
    ar = df[df["target_name"].eq(args.ar_model) & df["method"].eq("ar")].iloc[-1]
    floor = bandwidth_floor(args.ar_model, ar["dtype"], config.max_prompt_len, args.ar_new_tokens,
                            hbm_bytes_per_s, ar["tpot_s"])
    measure_steps(args.ar_model, steps_csv, StepSweep(batch_sizes=(1, 8), tokens_per_row=(1, 2, 4, 8), kv_len=512),
                  dtype=args.dtype, device=args.device)
    steps = io.read_measurements(steps_csv, table="step", ok_only=True)
    single = steps[steps["model_name"].eq(args.ar_model) & steps["batch_size"].eq(1) & steps["tokens_per_row"].eq(1)]
    step_s = float(single["median_time_s"].iloc[-1])
    return {"ar_model": args.ar_model, "model_params": ar["target_params"], "ar_time_per_token_s": ar["tpot_s"],
            **floor, "forward_graph_time_s": step_s,
            "forward_bandwidth_fraction": floor["bound_time_per_token_s"] / step_s}


def recompute_floor(summary_json: Path) -> dict:
    """(c) of an earlier run with today's floor definition (its prompt length 128 and measured bandwidth)."""
    summary = json.loads(Path(summary_json).read_text())
    band, hw = summary["bandwidth"], summary["hardware"]
    floor = bandwidth_floor(band["ar_model"], hw["dtype"], 128, 256, hw["hbm_bytes_per_s"],
                            band["ar_time_per_token_s"])
    print(json.dumps({**floor, "hbm_bytes_per_s": hw["hbm_bytes_per_s"], "ar_time_per_token_s":
                      band["ar_time_per_token_s"], "forward_bandwidth_fraction": floor["bound_time_per_token_s"]
                      / band["forward_graph_time_s"]}, indent=2))
    return floor


def main(argv=None) -> dict:
    """Run (a), (b), (c); write the CSVs and ``summary.json`` under ``--out``; return the summary."""
    args = parse_args(argv)
    if args.floor_from is not None:
        return recompute_floor(args.floor_from)
    args.out.mkdir(parents=True, exist_ok=True)
    spec_csv, steps_csv = args.out / "spec.csv", args.out / "steps.csv"
    target, draft = (train_quick_pair(args.work, args.train_seconds) if args.train_quick
                     else (args.target, args.draft))
    hw = measure_hardware(args.device, dtype=args.dtype)
    io.save_json(hw, args.out / "hw.json")
    print(hw.summary())
    summary = {"target": target, "draft": draft, "gamma": args.gamma, "prompts": args.prompts,
               "num_prompts": args.num_prompts, "max_new_tokens": args.max_new_tokens, "hardware": hw.to_dict(),
               **measure_pair(args, target, draft, spec_csv),
               "bandwidth": measure_bandwidth(args, hw.hbm_bytes_per_s, spec_csv, steps_csv), "goals": GOALS}
    summary["goals_met"] = {
        "speedup_vs_hf": bool(summary["speedup_vs_hf"] >= GOALS["min_speedup_vs_hf"]),
        "prediction_error": bool(abs(summary["prediction_error"]) <= GOALS["max_prediction_error"]),
        "bandwidth_fraction": bool(summary["bandwidth"]["bandwidth_fraction"] >= GOALS["min_bandwidth_fraction"])}
    io.save_json(summary, args.out / "summary.json")
    print(json.dumps({k: summary[k] for k in ("speedup_vs_hf", "predicted_speedup", "measured_decode_speedup",
                                              "prediction_error", "goals_met")}, indent=2, default=float))
    print(f"bandwidth: {json.dumps(summary['bandwidth'], default=float)}")
    return summary


if __name__ == "__main__":
    main()
