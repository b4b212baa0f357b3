"""``ppl-plane``: alpha versus draft and target perplexity (SDSL, ``alpha = A ppl_draft + B ppl_target + C``).

Every target x draft pair of the scale (at least 3 x 4 at the ``h100`` scale) is measured as a chain draft at
T=0; the perplexities of all models on the corpus test split are written to ``ppl.csv`` first, so the sweep
fills ``draft_ppl`` and ``target_ppl`` of every row.
"""

from __future__ import annotations

from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment
from sdlaws.experiments.scale import Scale

NAME = "ppl-plane"


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


EXPERIMENT = Experiment(NAME, "alpha vs draft and target perplexity over a target x draft grid (SDSL plane)",
                        models, measure)
