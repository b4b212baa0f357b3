"""Regenerate the at-scale fixture of the results document's tests: ``pretrain-tokens`` and ``ppl-plane`` run
end to end on CPU at a tiny analogue of ``--scale h200-science`` (WSD schedule, two training seeds, T = 0 and 1,
targets trained to a ratio of tokens per parameter, 4 targets x 6 draft shapes), each written as
``sdlaws experiment run NAME --out DIR/NAME.csv`` writes it, the layout of ``measurements/h200/science/``.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python tests/data/science/generate.py [--work /tmp/science-fixture]

About 15 s on two CPU cores. The numbers mean nothing (models of a few thousand parameters trained on a few
thousand tokens); the files have the columns, names and metadata of a real run.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from sdlaws.experiments import plan, run
from sdlaws.experiments.scale import QUICK, SCALES

#: The quick scale with what ``h200-science`` adds (docs/experiments.md, "Scale h200-science").
SCALE = replace(
    QUICK, name="quick-science", schedule="wsd", decay_fraction=0.2, warmup_fraction=0.005, seeds=(0, 1),
    acceptance_temperatures=(0.0, 1.0), plane_temperatures=(0.0, 1.0), num_prompts=4,
    targets=((2, 64), (1, 64), (2, 48), (1, 48)), main_target=(2, 64), target_tokens_per_param=0.1,
    pretrain_draft=(1, 32), pretrain_draft_tokens=40_960, pretrain_checkpoints=6, pretrain_first_fraction=0.01,
    plane_drafts=((1, 16), (2, 16), (1, 24), (2, 24), (1, 32), (2, 32)), draft_tokens=5_120)
OUT = Path(__file__).resolve().parent / "h200" / "science"


def main() -> None:
    """Run both experiments into :data:`OUT` (replacing what is there)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/science-fixture"))
    args = parser.parse_args()
    SCALES[SCALE.name] = SCALE
    shutil.rmtree(OUT, ignore_errors=True)
    for name in ("pretrain-tokens", "ppl-plane"):
        run(plan([name], scale=SCALE.name, work=args.work, out=OUT / f"{name}.csv", device="cpu"), progress=False)
    for claims in OUT.glob(".*.claims"):
        shutil.rmtree(claims)


if __name__ == "__main__":
    main()
