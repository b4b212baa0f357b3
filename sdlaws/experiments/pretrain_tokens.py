"""``pretrain-tokens``: acceptance versus draft pretraining tokens (Scylla Thm 1.1, ``acc = a log10(T) + b``).

One well-trained target and one draft architecture whose single training run is checkpointed at log-spaced
token counts (Pythia-style, spanning three decades). Each checkpoint is measured as a chain draft of length
gamma at T=0 and T=1, and its perplexity on the held-out split is recorded. Checkpoints come from one cosine
schedule, so early ones are mid-schedule snapshots, not runs trained to completion with a smaller budget.
"""

from __future__ import annotations

from sdlaws.experiments.context import Context, spread
from sdlaws.experiments.registry import Experiment
from sdlaws.experiments.scale import Scale

NAME = "pretrain-tokens"


def models(scale: Scale):
    """The main target and the checkpointed draft."""
    return [scale.spec(scale.main_target, scale.target_tokens),
            scale.spec(scale.pretrain_draft, scale.pretrain_draft_tokens, checkpoints=scale.pretrain_checkpoints)]


def measure(ctx: Context) -> None:
    """Perplexity of every checkpoint, then chain acceptance of each against the target."""
    target_spec, draft_spec = models(ctx.scale)
    target, drafts = ctx.final(target_spec), ctx.checkpoints(draft_spec)
    ctx.measure_ppl([target, *spread(drafts)])
    ctx.sweep(NAME, target, spread(drafts), gammas=(ctx.scale.gamma,), batch_sizes=(ctx.scale.num_prompts,),
              temperatures=ctx.scale.acceptance_temperatures)


EXPERIMENT = Experiment(NAME, "acceptance vs draft pretraining tokens, log-spaced checkpoints (Scylla Thm 1.1)",
                        models, measure)
