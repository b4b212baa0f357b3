"""``topk-batch``: throughput versus tree top-k at batch sizes 1..128 (Scylla Thm 1.3, ``k* = c B^-p``).

One trained target/draft pair; trees of fixed depth with top-k 1 (a chain), 2, 4, 8, 16 at every batch size,
T=0, plus the AR baseline at each batch size. Small batches are repeated until ``min_timed_prompts`` sequences
have been decoded, so every row's timing covers several generate calls. The target (the largest model of the
suite) is where batching moves the verify pass from launch/memory-bound to compute-bound on an H100.
Then the roofline inputs: hardware micro-benchmarks (``run.json``) and forward-pass timings (``step.csv``) of
the pair and of a random-weight 1B model (timing does not depend on the weights; acceptance never comes from
random weights).
"""

from __future__ import annotations

from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment
from sdlaws.experiments.scale import Scale

NAME = "topk-batch"


def models(scale: Scale):
    """The pair's target and draft."""
    return [scale.spec(scale.pair_target, scale.pair_target_tokens),
            scale.spec(scale.pair_drafts[0], scale.pair_draft_tokens)]


def measure_grid(ctx: Context, experiment: str) -> None:
    """The top-k x batch grid into ``experiment``'s CSV (also used by ``collapse`` when run on its own)."""
    target_spec, draft_spec = models(ctx.scale)
    target, draft = ctx.final(target_spec), ctx.final(draft_spec)
    s = ctx.scale
    for batch in spread(list(s.topk_batch_sizes)):
        ctx.sweep(experiment, target, [draft], gammas=(s.tree_depth,), topks=s.topks, batch_sizes=(batch,),
                  num_prompts=max(batch, s.min_timed_prompts), label=NAME)


def measure_timing(ctx: Context) -> None:
    """Hardware micro-benchmarks (into run.json) and forward-pass timings (``step.csv``) for the roofline.

    The pair's target and draft, and random-weight models of published shapes, are timed at every batch size
    and verify width the experiments use, with the KV cache half-way through a generation.
    """
    from sdlaws.measure.hwbench import StepSweep, measure_hardware, measure_steps

    s = ctx.scale
    if ctx.out_of_time("hardware micro-benchmarks"):
        return
    ctx.results.setdefault(NAME, {})["hardware"] = measure_hardware(ctx.device, dtype=ctx.dtype).to_dict()
    kv_len = s.prompt_tokens + s.max_new_tokens // 2
    pair = StepSweep(batch_sizes=s.step_batch_sizes, tokens_per_row=s.step_tokens_per_row, kv_len=kv_len,
                     seed=s.seed)
    large = StepSweep(batch_sizes=s.step_random_batch_sizes, tokens_per_row=s.step_random_tokens_per_row,
                      kv_len=kv_len, seed=s.seed)
    jobs = [(str(ctx.final(spec).path), pair) for spec in models(s)] + [(m, large) for m in s.step_random_models]
    for model, sweep in jobs:
        if ctx.out_of_time(f"forward timing of {model}"):
            return
        measure_steps(model, ctx.layout.file("step.csv"), sweep, dtype=ctx.dtype, device=ctx.device, progress=False)


def measure(ctx: Context) -> None:
    """Perplexity of the pair, the grid, then the timing tables."""
    ctx.measure_ppl([ctx.final(spec) for spec in models(ctx.scale)])
    measure_grid(ctx, NAME)
    measure_timing(ctx)


EXPERIMENT = Experiment(NAME, "throughput vs tree top-k at batch 1..128, optimum per batch (Scylla Thm 1.3)",
                        models, measure)
