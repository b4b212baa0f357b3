"""`sdlaws import vllm|sglang`: a serving engine's speculative-decoding counts as ``spec`` rows (sdlaws.ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import_app = typer.Typer(help="Import a serving engine's speculative-decoding metrics as spec rows that "
                              "`sdlaws fit` and `sdlaws plan` read.", no_args_is_help=True)

Source = Annotated[Path, typer.Argument(help="The metrics file.", show_default=False)]
Before = Annotated[Optional[Path], typer.Option("--before", help="An earlier scrape of the same server: the rows "
                                                "count what happened between the two.")]
Out = Annotated[Path, typer.Option("--out", help="spec CSV to append the rows to (created if absent).")]
Target = Annotated[Optional[str], typer.Option("--target", help="Target model name (vLLM: default the model_name "
                                               "label).")]
Draft = Annotated[Optional[str], typer.Option("--draft", help="Draft model name, for the draft_name column.")]
SpecTokens = Annotated[Optional[int], typer.Option("--num-spec-tokens", help="Draft length K the server ran with, "
                                                   "when the metrics do not show it.")]
Temperature = Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature of the traffic, "
                                                      "if one (the engines do not record it).")]
WindowS = Annotated[Optional[float], typer.Option("--window-s", help="Seconds between the two scrapes.")]
Experiment = Annotated[str, typer.Option("--experiment", help="Free-text label for the experiment column.")]
Gpu = Annotated[str, typer.Option("--gpu", help="Device the engine ran on, for the gpu_name column.")]
Topk = Annotated[int, typer.Option("--topk", help="--speculative-eagle-topk the server ran with (1 = chain).")]


@import_app.command("vllm")
def vllm(source: Source, out: Out, before: Before = None, target: Target = None, draft: Draft = None,
         num_spec_tokens: SpecTokens = None, temperature: Temperature = None, window_s: WindowS = None,
         experiment: Experiment = "", gpu: Gpu = "") -> None:
    """A vLLM /metrics exposition (V1 metric names) or a V0 log with 'Speculative metrics' lines; one row per
    model_name and engine label."""
    from sdlaws.ingest import ImportOptions, import_vllm

    opts = ImportOptions(target=target, draft=draft, num_spec_tokens=num_spec_tokens, temperature=temperature,
                         window_s=window_s, experiment=experiment, gpu=gpu)
    _write(import_vllm(source, before=before, opts=opts), out)


@import_app.command("sglang")
def sglang(source: Source, out: Out, target: Target = None, draft: Draft = None,
           num_spec_tokens: SpecTokens = None, topk: Topk = 1, temperature: Temperature = None,
           experiment: Experiment = "", gpu: Gpu = "") -> None:
    """SGLang /generate responses (JSON lines or a JSON list) with spec_verify_ct and spec_accept_token_num in
    their meta_info; one row for all of them."""
    from sdlaws.ingest import ImportOptions, import_sglang

    opts = ImportOptions(target=target, draft=draft, num_spec_tokens=num_spec_tokens, topk=topk,
                         temperature=temperature, experiment=experiment, gpu=gpu)
    _write(import_sglang(source, opts=opts), out)


def _write(rows: list[dict], out: Path) -> None:
    """Append the rows and say what they hold."""
    import pandas as pd

    from sdlaws import rates, schema
    from sdlaws.ingest import write_rows

    write_rows(rows, out)
    frame = pd.DataFrame(rows).reindex(columns=[c.name for c in schema.SPEC_RUN])
    derived = rates.derive(schema.validate(frame, "spec", source=str(out)))
    for r in derived.itertuples():
        typer.echo(f"{r.target_name} ({r.source_format}, labels {r.source_labels or '{}'}): {r.num_drafts:.0f} "
                   f"drafts of K={r.num_spec_tokens}, mean acceptance length {r.mean_acceptance_length:.3f}")
    typer.echo(f"appended {len(rows)} row(s) to {out}")


def register(app: typer.Typer) -> None:
    """Add ``sdlaws import`` to the root app."""
    app.add_typer(import_app, name="import")
