"""`sdlaws measure`: speculative-decoding sweeps, perplexity, hardware micro-benchmarks.

``sdlaws measure --target T --draft D ...`` runs a sweep (the group's own callback, so the ``ppl`` and
``hardware`` subcommands coexist with it). torch and transformers are imported inside the commands only.
Every command checks its options, model configs and output paths before it loads weights (bad input: one
``error:`` line, exit 2, nothing written); a sweep whose every configuration failed exits with code 1.

``--tp N`` (sweeps and ``hardware``) checks the command, then re-runs the same command line in N torchrun
processes that split each target between them (:mod:`sdlaws.measure.tp`); rank 0 prints and writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from sdlaws.errors import ConfigError, RunFailed


def register(app: typer.Typer) -> None:
    """Add the ``measure`` group (sweep callback + ``ppl`` and ``hardware``) to the root app."""
    group = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    group.callback(invoke_without_command=True)(measure)
    group.command("ppl")(ppl)
    group.command("hardware")(hardware)
    app.add_typer(group, name="measure")


def _parse_list(option: str, text: str, convert: Callable) -> tuple:
    """``"1,2,4"`` -> ``(1, 2, 4)``; :class:`ConfigError` naming ``option`` on a bad item."""
    try:
        return tuple(convert(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers, e.g. {option} 1,2,4") from None


def _integer(text: str) -> int | float:
    """An integer list item; ``1e3`` counts as 1000 (a value that is not a whole number is returned as a float,
    for the range check to refuse by name)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        return int(value) if value.is_integer() else value


def _parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)`` (the range is checked by :func:`sdlaws.measure.sweep.check_shard`)."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ConfigError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. --shard 0/4 to --shard 3/4")
    return int(index), int(count)


def _launcher(tp: int, device: str, models: tuple[str, ...], trust_remote_code: bool) -> bool:
    """True in the process that is to start a torchrun launch (``--tp`` > 1 outside torchrun), once it has checked
    that the ``models`` can be split; inside a launch, join it (each rank takes its GPU before any other CUDA
    work) and return False. The caller checks the rest of the command, then calls :func:`_relaunch`."""
    from sdlaws.measure import tp as tensor_parallel
    from sdlaws.measure.models import model_config, resolve_device

    if tensor_parallel.launched():
        if tp > 1:
            tensor_parallel.join(tp, resolve_device(device))
        return False
    configs = (model_config(spec, trust_remote_code=trust_remote_code) for spec in models)
    tensor_parallel.check_launch(tp, device, configs if tp > 1 else ())
    return tp > 1


def _relaunch(tp: int) -> None:
    """Re-run this command line in ``tp`` torchrun processes and exit with their exit code."""
    from sdlaws.measure import tp as tensor_parallel

    raise typer.Exit(tensor_parallel.relaunch(tp, sys.argv[1:]))


def _prints() -> bool:
    """Whether this process prints: rank 0 of a torchrun launch, or a process outside one."""
    from sdlaws.measure import tp as tensor_parallel

    return tensor_parallel.rank() == 0


def measure(
    ctx: typer.Context,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Target model: local dir, hub id[@revision] or random:NAME[?key=value]. Repeatable.")] = None,
    draft: Annotated[Optional[list[str]], typer.Option(help="Draft model (same forms). Repeatable.")] = None,
    num_spec_tokens: Annotated[str, typer.Option(
        "--num-spec-tokens", "--gamma", help="Draft tokens per step (tree depth), comma-separated (the "
                                             "num_spec_tokens column; --gamma is its short alias).")] = "4",
    topk: Annotated[str, typer.Option(help="Tree branching per depth, comma-separated; 1 = chain.")] = "1",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    temperature: Annotated[str, typer.Option(help="Temperatures, comma-separated (0 = greedy).")] = "0",
    prompts: Annotated[str, typer.Option(
        help="humaneval, code, math, summarize, random, or a JSONL file with a prompt/text field.")] = "humaneval",
    num_prompts: Annotated[int, typer.Option(
        help="Prompts per configuration (static batching: rounded up to full batches).")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt (EOS ignored).")] = 128,
    max_prompt_len: Annotated[int, typer.Option(help="Prompt tokens kept (the last ones).")] = 512,
    chat_template: Annotated[bool, typer.Option(help="Wrap prompts in the tokenizer's chat template.")] = True,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    device: Annotated[str, typer.Option(help="cuda, cuda:N, cpu or auto.")] = "auto",
    seed: Annotated[int, typer.Option(help="Prompt, sampling and random-weight seed.")] = 0,
    experiment: Annotated[str, typer.Option(help="Label written to every row.")] = "",
    ppl: Annotated[Optional[Path], typer.Option(help="ppl CSV (sdlaws measure ppl) for draft_/target_ppl.")] = None,
    ppl_eval_set: Annotated[Optional[str], typer.Option(help="eval_set to use from --ppl.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub.")] = False,
    cuda_graphs: Annotated[bool, typer.Option(help="Capture decode steps as CUDA graphs.")] = True,
    fused_forward: Annotated[bool, typer.Option(help="Fused fast-path forward for Llama/Mistral/Qwen2 models.")] = True,
    tree_budget: Annotated[Optional[int], typer.Option(
        help="Most drafted tokens a tree verifies per step [default: top-k x depth].")] = None,
    repeats: Annotated[int, typer.Option(help="Rows per configuration, each decoding the prompts again after "
                                               "one warm-up (noise across repeats).")] = 1,
    acceptance_profile: Annotated[Optional[str], typer.Option(
        help="Synthetic acceptance for timing runs (real forwards, accept/reject drawn from the profile; needs "
             "--temperature 0): rows q[d-1][r] = P(accept the draft's rank-r child at depth d | path so far), "
             "inline '0.8,0.1;0.7,0.1;0.6' (';' between depths) or a JSON file [[0.8, 0.1], ...] or "
             "{\"profile\": [[...]], \"source\": \"...\"}.")] = None,
    tp: Annotated[int, typer.Option("--tp", help="GPUs each target is split over (tensor parallel): re-runs this "
                                                 "command in that many torchrun processes; drafts run whole on "
                                                 "each.")] = 1,
    batching: Annotated[str, typer.Option(
        help="static: each batch of --batch prompts decodes until its slowest row is done (comparable with rows "
             "measured so far); continuous: a row that is done takes the next prompt at once, as serving engines "
             "(vLLM, SGLang, TensorRT-LLM) batch, so the batch stays full until the prompts run out. Rows record it "
             "(batching column) and compare only with AR rows of the same batching.")] = "static",
    shard: Annotated[Optional[str], typer.Option(
        help="i/n: measure every n-th configuration from the i-th, so n processes (one per GPU) share one grid "
             "and one --out.")] = None,
    out: Annotated[Path, typer.Option(help="spec CSV to append to (resumes: ok run ids are skipped).")]
    = Path("measurements/spec.csv"),
) -> None:
    """Measure speculative decoding over a grid; one CSV row per configuration (subcommands: ppl, hardware)."""
    if ctx.invoked_subcommand is not None:
        return
    from sdlaws.measure import profile
    from sdlaws.measure.config import MeasureConfig
    from sdlaws.measure.sweep import prepare_sweep

    if not target:
        raise ConfigError("pass --target MODEL (a local dir, hub id[@revision] or random:NAME)")
    config = MeasureConfig(
        targets=tuple(target), drafts=tuple(draft or ()),
        num_spec_tokens=_parse_list("--num-spec-tokens", num_spec_tokens, _integer),
        topks=_parse_list("--topk", topk, _integer), batch_sizes=_parse_list("--batch", batch, _integer),
        temperatures=_parse_list("--temperature", temperature, float), prompts=prompts, num_prompts=num_prompts,
        max_new_tokens=max_new_tokens, max_prompt_len=max_prompt_len, chat_template=chat_template, dtype=dtype,
        device=device, seed=seed, experiment=experiment, ppl_file=None if ppl is None else str(ppl),
        ppl_eval_set=ppl_eval_set, trust_remote_code=trust_remote_code, cuda_graphs=cuda_graphs,
        fused_forward=fused_forward, tree_budget=tree_budget, repeats=repeats, tp_size=tp, batching=batching,
        acceptance_profile=None if acceptance_profile is None else profile.parse(acceptance_profile))
    share = None if shard is None else _parse_shard(shard)
    launcher = _launcher(tp, device, config.targets, trust_remote_code)
    sweep = prepare_sweep(config, out, shard=share, launching=launcher)
    if launcher:
        _relaunch(tp)
    prints = _prints()
    if prints:
        typer.echo(config.summary())
        typer.echo(f"{sweep.result.num_runs} configurations{'' if share is None else f' (shard {shard})'} -> {out}")
    result = sweep.run()
    if prints:
        typer.echo(result.summary())
    if result.failures and not result.num_ok:
        if not prints:  # the other ranks of a launch failed alike; rank 0 says so
            raise typer.Exit(RunFailed.exit_code)
        label, error = result.failures[0]
        raise RunFailed(f"all {len(result.failures)} configuration(s) measured by this run failed (first: {label}: "
                        f"{error}); the failed rows are in {out}")


def ppl(
    model: Annotated[Optional[str], typer.Option(help="Model: local dir, hub id[@revision] or random:NAME.")] = None,
    eval_: Annotated[Optional[Path], typer.Option(
        "--eval", help="Held-out text: a .bin of uint16 token ids, a text file, or a folder of .py/.txt.")] = None,
    eval_set: Annotated[Optional[str], typer.Option(help="Name written to the eval_set column [default: --eval].")]
    = None,
    out: Annotated[Path, typer.Option(help="ppl CSV to append to.")] = Path("measurements/ppl.csv"),
    context: Annotated[Optional[int], typer.Option(help="Window length [default: model context, at most 2048].")]
    = None,
    stride: Annotated[Optional[int], typer.Option(help="Window stride [default: half the window].")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Evaluate only the first N tokens.")] = None,
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    device: Annotated[str, typer.Option(help="cuda, cuda:N, cpu or auto.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of random: weights.")] = 0,
    experiment: Annotated[str, typer.Option(help="Label written to the row.")] = "",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub.")] = False,
) -> None:
    """Measure a model's perplexity on held-out text and append a ppl row."""
    from sdlaws.measure.ppl import measure_ppl

    if model is None or eval_ is None:
        raise ConfigError("pass --model MODEL and --eval PATH (a .bin of token ids, a text file or a folder)")
    _check_seed(seed)
    result = measure_ppl(model, eval_, out, eval_set=eval_set, dtype=dtype, device=device, context_len=context,
                         stride=stride, max_tokens=max_tokens, seed=seed, experiment=experiment,
                         trust_remote_code=trust_remote_code)
    typer.echo(f"already measured in {out}; nothing to do" if result is None else f"{result.summary()} -> {out}")


def hardware(
    out: Annotated[Path, typer.Option(help="Hardware profile JSON.")] = Path("hw.json"),
    model: Annotated[Optional[str], typer.Option(help="Also time this model's forward pass (step table).")]
    = None,
    batch: Annotated[str, typer.Option(help="Batch sizes of the forward timing, comma-separated.")] = "1,8,64",
    tokens: Annotated[str, typer.Option(help="Tokens per row of the forward timing, comma-separated.")]
    = "1,2,4,8,16",
    kv: Annotated[int, typer.Option(help="Cached tokens per row during the forward timing.")] = 512,
    repeats: Annotated[int, typer.Option(help="Timed forwards per point (median reported).")] = 20,
    timing_out: Annotated[Path, typer.Option(help="step CSV for the forward timing.")]
    = Path("measurements/steps.csv"),
    dtype: Annotated[str, typer.Option(help="bf16, fp16 or fp32.")] = "bf16",
    device: Annotated[str, typer.Option(help="cuda, cuda:N, cpu or auto.")] = "auto",
    cuda_graphs: Annotated[bool, typer.Option(help="Time forwards as CUDA graph replays.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of random: weights and input tokens.")] = 0,
    tp: Annotated[int, typer.Option("--tp", help="GPUs the --model is split over (tensor parallel): re-runs this "
                                                 "command in that many torchrun processes; rows get tp_size and "
                                                 "allreduce_time_s.")] = 1,
    json_: Annotated[bool, typer.Option("--json", help="Print the profile JSON instead of a summary.")] = False,
) -> None:
    """Micro-benchmark the device (matmul FLOP/s, memory bandwidth, launch overhead) and optionally a model."""
    import json

    from sdlaws import checks
    from sdlaws.io import save_json
    from sdlaws.measure.hwbench import StepSweep, check_steps, measure_hardware, measure_steps

    sweep = StepSweep(batch_sizes=_parse_list("--batch", batch, _integer),
                      tokens_per_row=_parse_list("--tokens", tokens, _integer), kv_len=kv, num_repeats=repeats,
                      cuda_graphs=cuda_graphs, seed=seed, tp_size=tp)
    _check_seed(seed)
    checks.output_file("--out", out)
    launcher = _launcher(tp, device, () if model is None else (model,), False)
    if model is not None:
        check_steps(model, timing_out, sweep, dtype=dtype, device=device, device_memory=not launcher)
    if launcher:
        _relaunch(tp)
    prints = _prints()
    profile = measure_hardware(device, dtype=dtype)  # each rank benchmarks its own GPU
    if model is not None:
        rows = measure_steps(model, timing_out, sweep, dtype=dtype, device=device)
        failed = sum(r["status"] != "ok" for r in rows)
        if prints:
            typer.echo(f"{len(rows)} forward timings ({failed} failed) -> {timing_out}")
    if prints:
        save_json(profile, out)
        typer.echo(json.dumps(profile.to_dict(), indent=2) if json_ else f"{profile.summary()}\n-> {out}")


def _check_seed(seed: int) -> None:
    """:class:`ConfigError` for a seed the random generators refuse (negative or above 2**63 - 1)."""
    from sdlaws import checks

    checks.number("--seed", seed, 0, 2**63 - 1, integer=True)
