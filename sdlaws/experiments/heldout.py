"""``heldout``: end-to-end speedup at configurations no other experiment measures, to test predictions.

Chains of other lengths (gamma 2, 3, 6), a second draft, a top-3 tree and T=1, at batch sizes outside the
``topk-batch`` grid where possible, each with its AR baseline. Nothing here is used for fitting: the report
compares the planner's predicted throughput and speedup for these rows with the measured ones.
"""

from __future__ import annotations

from sdlaws.experiments.context import Context
from sdlaws.experiments.registry import Experiment
from sdlaws.experiments.scale import Scale

NAME = "heldout"


def models(scale: Scale):
    """The pair's target, then every pair draft."""
    return [scale.spec(scale.pair_target, scale.pair_target_tokens),
            *(scale.spec(shape, scale.pair_draft_tokens) for shape in scale.pair_drafts)]


def measure(ctx: Context) -> None:
    """Perplexities, then each held-out case."""
    target_spec, *draft_specs = models(ctx.scale)
    target, drafts = ctx.final(target_spec), [ctx.final(spec) for spec in draft_specs]
    ctx.measure_ppl([target, *drafts])
    for case in ctx.scale.heldout:
        ctx.sweep(NAME, target, [drafts[case.draft]], gammas=(case.gamma,), topks=(case.topk,),
                  batch_sizes=case.batch_sizes, temperatures=(case.temperature,),
                  num_prompts=max(*case.batch_sizes, ctx.scale.min_timed_prompts))


EXPERIMENT = Experiment(NAME, "end-to-end speedup at held-out configurations (prediction check)", models, measure)
