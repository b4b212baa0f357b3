"""`sdlaws experiment run|report|cost-model`: run the controlled experiments, write the documents on their data.

Parse, call one library function, print. Heavy imports (torch, transformers) happen inside the commands, so
``sdlaws --help`` stays fast and the documents are written without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

#: Exit status of ``run --train-only`` while training is unfinished (1 and 2 are errors and usage errors).
UNFINISHED_EXIT = 3

experiment_app = typer.Typer(add_completion=False, help="Run the controlled scaling experiments (train, measure, "
                                                        "write CSVs) and write the documents on their results.")


def register(app: typer.Typer) -> None:
    """Add ``experiment run``, ``experiment report`` and ``experiment cost-model`` to the root app."""
    app.add_typer(experiment_app, name="experiment")


@experiment_app.callback(invoke_without_command=True)
def _list(ctx: typer.Context,
          list_: Annotated[bool, typer.Option("--list", help="List the experiments and groups and exit.")] = False,
          ) -> None:
    """``--list``, or the help when no sub-command is given."""
    from sdlaws.experiments import describe

    if list_:
        typer.echo(describe())
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@experiment_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="An experiment (`sdlaws experiment --list`), or 'suite' for several "
                                             "sharing one training run.", show_default=False)],
    work: Annotated[Path, typer.Option(help="Scratch directory for the corpus and models (reused on re-runs).")]
    = Path("runs/experiments"),
    out: Annotated[Optional[Path], typer.Option(
        help="Spec CSV of one experiment (default: measurements/NAME.csv); for 'suite', a directory "
             "(default: measurements/).")] = None,
    only: Annotated[Optional[str], typer.Option(help="suite: comma-separated experiments or groups "
                                                     "(acceptance, throughput); default: all.")] = None,
    budget_s: Annotated[Optional[float], typer.Option(help="Wall-clock budget in seconds (default: 480 at the H100 "
                                                           "scale, none with --quick); training is cut to leave "
                                                           "the measurements their reserved time.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny CPU-sized models and workloads (a smoke test); "
                                                        "the same as --scale quick.")] = False,
    scale: Annotated[str, typer.Option(help="Sizes and workloads: h100 (one H100 command), h200 (the throughput "
                                            "experiments as the planner's held-out test on one H200), "
                                            "h200-science (the acceptance laws in their regime, WSD, several "
                                            "resumable H200 commands) or quick.")]
    = "h100",
    corpus_dir: Annotated[Optional[Path], typer.Option("--corpus", help="Use this corpus instead of building "
                                                                        "one under --work.")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the models, token budgets and time estimates; "
                                                            "train and measure nothing.")] = False,
    train_only: Annotated[bool, typer.Option("--train-only", help="Train (resuming what an earlier command "
                                                                  "left) and measure nothing; exit status 3 "
                                                                  "while some model is short of its budget, so "
                                                                  "`until ... --train-only; do :; done` "
                                                                  "finishes it.")] = False,
) -> None:
    """Run an experiment end to end: corpus, training, measurements, CSVs."""
    from sdlaws import experiments

    names = experiments.resolve_names(name, only)
    plan = experiments.plan(names, scale="quick" if quick else scale, work=work, out=out, budget_s=budget_s,
                            corpus_dir=corpus_dir, device=device, suite=name == "suite")
    if dry_run:
        typer.echo(plan.summary())
        return
    result = experiments.run(plan, train_only=train_only)
    typer.echo(result.summary())
    if train_only and result.train.stopped_early:
        raise typer.Exit(UNFINISHED_EXIT)


@experiment_app.command("report")
def report(
    measurements: Annotated[Path, typer.Option(help="Directory of suite outputs (acceptance/, throughput/, "
                                                    "bench/, draft-depth-30M/).")] = Path("measurements"),
    out: Annotated[Path, typer.Option(help="Directory for fits, figures and report.json; the markdown is written "
                                           "beside it (docs/results -> docs/results.md).")] = Path("docs/results"),
) -> None:
    """Fit the laws to the measurements, check the planner's predictions, write the results document."""
    from sdlaws.experiments.report import summary, write_report

    typer.echo(summary(write_report(measurements, out)))


@experiment_app.command("cost-model")
def cost_model(
    measurements: Annotated[Path, typer.Option(help="Directory holding h200/ and the H100 step tables.")]
    = Path("measurements"),
    out: Annotated[Path, typer.Option(help="The markdown document (figures in a folder beside it).")]
    = Path("docs/cost-model.md"),
) -> None:
    """The step-time law and Thm 1.3 at 8B scale, from the committed step tables and sweep."""
    from sdlaws.experiments.costmodel_doc import write

    typer.echo(f"wrote {write(out, measurements)}")
