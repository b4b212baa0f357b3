"""`sdlaws validate`: fit what the planner needs on training measurements and predict held-out ones.

Parse, call :func:`sdlaws.plan.validate.validate`, print; ``--out`` writes ``validation.json`` and a
predicted-vs-measured figure. Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sdlaws.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the ``validate`` command to the root app."""
    app.command("validate")(validate)


def validate(
    train: Annotated[Optional[list[Path]], typer.Option("--train", help="spec CSV(s) to fit acceptance and engine "
                                                                       "overheads on (repeatable).")] = None,
    heldout: Annotated[Optional[list[Path]], typer.Option("--heldout", help="spec CSV(s) to predict; never used "
                                                                           "for fitting (repeatable).")] = None,
    steps: Annotated[Optional[list[Path]], typer.Option("--steps", help="step CSV(s) of the same GPU for the "
                                                                       "step-time law (repeatable).")] = None,
    surface_steps: Annotated[Optional[list[Path]], typer.Option(
        "--surface-steps", help="step CSV(s) of passes the law's terms do not count (e.g. draft heads on stock "
                                "Hugging Face layers): residual surfaces only, not in the law's fit "
                                "(repeatable).")] = None,
    hardware: Annotated[str, typer.Option(help="Preset of the measured GPU (centres the law's prior).")] = "h100",
    out: Annotated[Optional[Path], typer.Option(help="Write validation.json and validation.png here.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    leave_one_draft_out: Annotated[bool, typer.Option(
        "--leave-one-draft-out", help="Instead of --heldout: per target, predict each draft's rows from the "
                                      "target's other drafts (the draft law's check).")] = False,
) -> None:
    """Predict every held-out configuration (tokens/s, speedup, TPOT, steps per batch) from training rows and
    step tables, and report the errors with bootstrap intervals."""
    import json

    from sdlaws.hardware import load_hardware
    from sdlaws.io import read_measurements, save_json
    from sdlaws.plan.cost import fit_steptime
    from sdlaws.plan.validate import leave_one_draft_out as by_draft
    from sdlaws.plan.validate import validate as run

    if leave_one_draft_out and heldout:
        raise ConfigError("--leave-one-draft-out holds out each draft of --train in turn; drop --heldout")
    if not (train and (heldout or leave_one_draft_out) and steps):
        raise ConfigError("pass --train SPEC.csv, --heldout SPEC.csv (or --leave-one-draft-out) and --steps "
                          "STEP.csv (each repeatable)")
    overlap = {p.resolve() for p in train} & {p.resolve() for p in heldout or []}
    if overlap:
        raise ConfigError(f"--train and --heldout share {sorted(map(str, overlap))}; a prediction must not see its "
                          "own data")
    surface = read_measurements(surface_steps, table="step", ok_only=True) if surface_steps else None
    law = fit_steptime(read_measurements(steps, table="step", ok_only=True), load_hardware(hardware),
                       surface_only=surface)
    rows = read_measurements(train, table="spec")
    result = by_draft(rows, law) if leave_one_draft_out else run(rows, read_measurements(heldout, table="spec"), law)
    if out is not None:
        from sdlaws.plotting import predicted_vs_measured

        out.mkdir(parents=True, exist_ok=True)
        save_json(result.to_dict(), out / "validation.json")
        rows = result.predicted()
        predicted_vs_measured(rows["tokens_per_s_meas"], rows["tokens_per_s_pred"], rows["method"],
                              out / "validation.png", quantity="tokens/s", title="held-out configurations")
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str) if json_ else result.summary())
