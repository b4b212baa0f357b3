"""Where a decode step's time goes: per-phase times (CUDA graphs) and the top kernels of a phase (eager,
torch.profiler) for a few engine configurations under synthetic acceptance.

    python3 benchmarks/profile_phases.py --profile measurements/h200/heldout-profile.json \
        --case chain,1,1,64,2048 --case chain,2,1,64,2048 --out out/phases.txt
    python3 benchmarks/profile_phases.py --profile ... --phase verify --case ar,1,1,1,128 --case ar,1,1,64,128
    python3 benchmarks/profile_phases.py --forward 64,16 --forward 32,64 --kv-len 256 --out out/forwards.txt

A case is ``method,gamma,topk,batch,prompt_len`` (random prompts, 32 new tokens; ``ar`` ignores gamma and top-k
and has no draft phase). For each case it prints the draft and verify milliseconds per step of a graph-replayed
``generate`` (as ``sdlaws measure`` times them), the chosen phase (``--phase``, default draft) replayed eagerly,
its kernels by total CUDA time, and their summed CUDA time per run: where that sum is well under the graph-replayed
phase time, the time goes to gaps between kernels (launch and dependency latency), not to the kernels.

A forward (``--forward batch,tokens``) is one bare pass of the target as ``sdlaws measure hardware`` times it (the
fast path over a slot cache holding ``--kv-len`` random tokens per row): its graph-replayed milliseconds, then the
same pass eagerly under the profiler, in the same format (``ar`` case, verify phase), so that
``benchmarks/phase_breakdown.py`` reads it too: a verify forward of many tokens per row without a draft.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time

import torch

from sdlaws.errors import SdlawsError
from sdlaws.measure.engine import DecodeConfig, SpecDecoder
from sdlaws.measure.models import load_model
from sdlaws.measure.profile import parse


def _case(text: str) -> tuple[str, int, int, int, int]:
    """``method,gamma,topk,batch,prompt_len``; a malformed case is one argparse error line (exit 2)."""
    try:
        method, gamma, topk, batch, prompt = text.split(",")
        case = method, int(gamma), int(topk), int(batch), int(prompt)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not method,gamma,topk,batch,prompt_len "
                                         "(e.g. chain,1,1,64,2048)") from None
    if method not in ("ar", "chain", "tree") or min(case[1:]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: method is ar, chain or tree and the numbers are positive")
    return case


def _forward(text: str) -> tuple[int, int]:
    """``batch,tokens``; a malformed one is one argparse error line (exit 2)."""
    try:
        batch, tokens = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not batch,tokens (e.g. 64,16)") from None
    if min(batch, tokens) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch and tokens are positive")
    return batch, tokens


def _phase_ms(dec: SpecDecoder, prompts: list[list[int]]) -> tuple[float, float]:
    dec.generate(prompts)  # capture and warm up
    _, stats = dec.generate(prompts)
    return 1e3 * stats.draft_time_s / stats.num_steps, 1e3 * stats.verify_time_s / stats.num_steps


@torch.inference_mode()
def _phase_kernels(dec: SpecDecoder, batch: int, runs: int, top: int, phase: str) -> str:
    """Eager ``phase`` (draft or verify) ``runs`` times under the profiler: its mean wall ms, its top kernels and
    their summed CUDA time per run."""
    return _kernel_report(getattr(dec._workspace(batch), f"{phase}_phase").fn, dec.device.type == "cuda", runs,
                          top, phase)


@torch.inference_mode()
def _forward_report(model, batch: int, tokens: int, kv_len: int, runs: int, top: int) -> str:
    """A bare forward of ``(batch, tokens)`` new tokens over ``kv_len`` cached ones: its graph-replayed ms as
    ``sdlaws measure hardware`` times it (:func:`~sdlaws.measure.hwbench.forward_time_s`), then its kernels as a
    verify phase's."""
    from sdlaws.measure.hwbench import _forward_inputs, _prefilled_cache, forward_time_s

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)
    cache = _prefilled_cache(model, batch, kv_len, kv_len + tokens, gen)
    graph_s = forward_time_s(model, cache, kv_len + tokens, batch, tokens, kv_len, repeats=runs, warmup=1,
                             cuda_graphs=device.type == "cuda")
    step = functools.partial(model, **_forward_inputs(model, batch, kv_len, tokens, kv_len + tokens, cache, gen))
    return (f"== ar gamma=1 topk=1 batch={batch} prompt={kv_len}: graphs: draft 0.000 ms/step, verify "
            f"{1e3 * graph_s:.3f} ms/step (a bare forward of {tokens} tokens per row)\n"
            + _kernel_report(step, device.type == "cuda", runs, top, "verify"))


def _kernel_report(fn, cuda: bool, runs: int, top: int, phase: str) -> str:
    """Eager ``fn`` (one ``phase``) ``runs`` times under the profiler: its mean wall ms, its top kernels and their
    summed CUDA time per run."""
    eager_ms, averages = _profiled(fn, cuda, runs)
    return f"eager {phase} phase {eager_ms:.3f} ms/run, kernels {_kernel_ms(averages, runs):.3f} ms/run\n" + \
        averages.table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=top,
                       max_name_column_width=90)


def _profiled(fn, cuda: bool, runs: int):
    """``fn()`` ``runs`` times: its mean wall ms (synchronised) and the profiler's key averages of ``runs`` more."""
    from torch.profiler import ProfilerActivity, profile

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    sync()
    eager_ms = 1e3 * (time.perf_counter() - start) / runs
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            fn()
        sync()
    return eager_ms, prof.key_averages()


def _kernel_ms(averages, runs: int) -> float:
    """Device time of the kernels themselves (self time: no double counting of nested ops), per run."""
    return sum(getattr(e, "self_device_time_total", 0.0) for e in averages) / 1e3 / runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="random:llama-3.1-8b")
    ap.add_argument("--draft", default="random:llama-3.2-1b")
    ap.add_argument("--profile", help="acceptance profile (JSON file or inline rows); needed by --case")
    ap.add_argument("--case", action="append", type=_case, default=[])
    ap.add_argument("--forward", action="append", type=_forward, default=[],
                    help="batch,tokens: a bare target forward (no draft, no profile)")
    ap.add_argument("--kv-len", type=int, default=256, help="cached tokens per row of a --forward")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--phase", choices=("draft", "verify"), default="draft", help="the phase whose kernels to list")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not args.case and not args.forward:
        ap.error("nothing to profile: pass --case and/or --forward")
    if args.case and not args.profile:
        ap.error("a --case needs --profile (an acceptance profile)")
    if args.kv_len < 1:
        ap.error(f"--kv-len {args.kv_len}: pass a positive number of cached tokens")
    try:
        profile = parse(args.profile) if args.case else None
    except SdlawsError as exc:
        ap.error(str(exc))  # one line, exit 2, before any model loads or output is written
    if args.phase == "draft" and any(case[0] == "ar" for case in args.case):
        ap.error("an ar case has no draft phase; pass --phase verify")
    target = load_model(args.target, device=args.device)[0]
    draft = load_model(args.draft, device=args.device)[0] if any(c[0] != "ar" for c in args.case) else None
    vocab = min(32000, target.config.vocab_size)
    out = open(args.out, "w") if args.out else sys.stdout
    gen = torch.Generator().manual_seed(0)
    for method, gamma, topk, batch, prompt_len in args.case:
        cfg = DecodeConfig(method=method, num_spec_tokens=gamma, tree_topk=topk, max_new_tokens=32,
                           acceptance_profile=None if method == "ar" else profile)
        prompts = torch.randint(0, vocab, (batch, prompt_len), generator=gen).tolist()
        model = None if method == "ar" else draft
        dec = SpecDecoder(target, model, cfg, max_prompt_len=prompt_len)
        draft_ms, verify_ms = _phase_ms(dec, prompts)
        print(f"== {method} gamma={gamma} topk={topk} batch={batch} prompt={prompt_len}: graphs: draft "
              f"{draft_ms:.3f} ms/step, verify {verify_ms:.3f} ms/step", file=out, flush=True)
        eager = SpecDecoder(target, model, dataclasses.replace(cfg, cuda_graphs=False), max_prompt_len=prompt_len)
        eager.generate(prompts)
        print(_phase_kernels(eager, batch, args.runs, args.top, args.phase), file=out, flush=True)
        del dec, eager
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if args.forward:
        from sdlaws.measure import fastpath

        fast = fastpath.wrap(target, invariant=True)  # the target as the engine runs it
        for batch, tokens in args.forward:
            print(_forward_report(fast, batch, tokens, args.kv_len, args.runs, args.top), file=out, flush=True)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
