"""``draft-depth``: acceptance versus draft depth and width (Scylla Thm 1.2, ``acc = a log10(layers) + b``).

Drafts of 1..8 decoder layers at two widths, all trained on the same token stream with the same budget, are
measured as chain drafts of length gamma against the main target at T=0 (and T=1 where the scale says so).
"""

from __future__ import annotations

from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment
from sdlaws.experiments.scale import Scale

NAME = "draft-depth"


def models(scale: Scale):
    """The main target, then the depth x width drafts."""
    return [scale.spec(scale.main_target, scale.target_tokens),
            *(scale.spec(shape, scale.draft_tokens) for shape in scale.depth_drafts)]


def measure(ctx: Context) -> None:
    """Perplexity of every model, then chain acceptance of each draft against the target."""
    target_spec, *draft_specs = models(ctx.scale)
    target = ctx.final(target_spec)
    drafts = spread([ctx.final(spec) for spec in draft_specs])
    ctx.measure_ppl([target, *drafts])
    ctx.sweep(NAME, target, drafts, gammas=(ctx.scale.gamma,), batch_sizes=(ctx.scale.num_prompts,),
              temperatures=ctx.scale.acceptance_temperatures)


EXPERIMENT = Experiment(NAME, "acceptance vs draft layers (1..8) at two widths (Scylla Thm 1.2)", models, measure)
