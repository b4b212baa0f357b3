"""`sdlaws train corpus|model|head`: build a corpus from local text, train small model families and draft heads.

Heavy imports (torch, transformers, tokenizers) happen inside the commands so ``sdlaws --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdlaws.errors import ConfigError

train_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Build a corpus from local text, train small Llama models from scratch and draft "
                             "heads on them.")


# Options that `train model` and `train head` share.
InitSeed = Annotated[int, typer.Option("--seed", help="Initialisation seed (the data seed is --data-seed).")]
Device = Annotated[str, typer.Option(help="auto, cuda or cpu.")]
TimeLimit = Annotated[Optional[float], typer.Option("--time-limit-s", help="Stop (with a checkpoint) after this long.")]
UntilTokens = Annotated[Optional[str], typer.Option("--until-tokens", help="Pause at this many tokens; re-run to "
                                                                           "continue.")]


def register(app: typer.Typer) -> None:
    """Add ``train corpus``, ``train model`` and ``train head`` to the root app."""
    app.add_typer(train_app, name="train")


@train_app.command("corpus")
def corpus(
    out: Annotated[Path, typer.Option(help="Corpus directory (train.bin, test.bin, tokenizer.json, manifest.json).")],
    source: Annotated[Optional[list[Path]], typer.Option(
        help="Directory whose .py files are read (repeatable) (default: this Python's stdlib and site-packages).",
        show_default=False)] = None,
    extra: Annotated[Optional[list[Path]], typer.Option(
        help="Extra text file (.gz/.dz decompressed) or directory of .py/.txt/.md/.rst (repeatable).",
        show_default=False)] = None,
    vocab: Annotated[int, typer.Option(help="BPE vocabulary size (EOS included), at most 65535.")] = 8192,
    max_tokens: Annotated[Optional[str], typer.Option(help="Stop after this many train tokens (e.g. 100M).")] = None,
    max_bytes: Annotated[Optional[str], typer.Option(help="Read at most this many source bytes (e.g. 200M).")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of files held out for the test split.")] = 0.02,
    seed: Annotated[int, typer.Option(help="Seed of the split, file order and held-out sample.")] = 0,
    near_dup_threshold: Annotated[float, typer.Option(help="Drop files whose MinHash Jaccard similarity with a kept "
                                                           "file reaches this (1.0: near-identical only).")] = 0.8,
    native_and_docs: Annotated[bool, typer.Option("--native-and-docs/--python-only", help="Also read C/C++/CUDA "
                                                  "sources and headers and docs (.md/.rst/.txt) under the roots.")]
    = False,
    heldout_tokens: Annotated[str, typer.Option(help="Tokens of the held-out evaluation set.")] = "1048576",
    heldout_file_cap: Annotated[int, typer.Option(help="Most tokens the held-out set takes from one file.")] = 4096,
    json_: Annotated[bool, typer.Option("--json", help="Print the manifest summary as JSON.")] = False,
) -> None:
    """Build a tokenized corpus from local Python source (no network) with a train/test split by file."""
    from sdlaws import checks
    from sdlaws.train.corpus import CorpusConfig, build_corpus
    from sdlaws.train.families import parse_tokens

    checks.output_dir("--out", out)
    checks.number("--seed", seed, 0, 2**63 - 1, integer=True)
    config = CorpusConfig(sources=tuple(map(str, source or ())), extra=tuple(map(str, extra or ())),
                          vocab_size=vocab, test_fraction=test_fraction, seed=seed,
                          max_tokens=parse_tokens(max_tokens, "--max-tokens") if max_tokens else None,
                          max_bytes=parse_tokens(max_bytes, "--max-bytes") if max_bytes else None,
                          near_dup_threshold=near_dup_threshold, native_and_docs=native_and_docs,
                          heldout_tokens=parse_tokens(heldout_tokens, "--heldout-tokens"),
                          heldout_file_cap=heldout_file_cap).check()
    result = build_corpus(out, config)
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_ else result.summary())


@train_app.command("model")
def model(
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `sdlaws train corpus`.")],
    tokens: Annotated[str, typer.Option(help="Token budget per model (e.g. 50M).")],
    out: Annotated[Path, typer.Option(help="Parent directory of the model directories.")] = Path("runs/models"),
    family: Annotated[Optional[str], typer.Option(help="Named family of shapes (see sdlaws.train.families).")]
    = None,
    layers: Annotated[Optional[int], typer.Option(help="Decoder layers of a single model.")] = None,
    hidden: Annotated[Optional[int], typer.Option(help="Width d of a single model.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="Attention heads (default: d / 64).")] = None,
    checkpoints: Annotated[int, typer.Option(help="Checkpoints, log-spaced in tokens, the last at the budget.")] = 8,
    first_checkpoint: Annotated[Optional[str], typer.Option(help="Tokens at the first checkpoint "
                                                                 "(default: budget / 1000).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: min(3e-3, 1e-3 * 512 / d)).")]
    = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per training window.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Windows per optimizer step.")] = 128,
    seed: InitSeed = 0,
    data_seed: Annotated[int, typer.Option(help="Seed of the training windows.")] = 0,
    device: Device = "auto",
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile each model on CUDA.")]
    = False,
    time_limit_s: TimeLimit = None,
    until_tokens: UntilTokens = None,
    schedule: Annotated[str, typer.Option(help="cosine, or wsd: a constant-LR trunk with a cool-down branch per "
                                               "checkpoint, each a finished run (docs/training.md).")] = "cosine",
    decay_fraction: Annotated[float, typer.Option(help="wsd: share of each checkpoint's budget spent cooling "
                                                       "down.")] = 0.2,
    checkpoint_every_s: Annotated[Optional[float], typer.Option(help="Also save the resume state this often "
                                                                     "(seconds).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the checkpoints as JSON.")] = False,
) -> None:
    """Train one model (--layers/--hidden) or a named --family concurrently; re-running resumes."""
    from sdlaws import checks
    from sdlaws.train.corpus import load_corpus
    from sdlaws.train.families import TrainSpec, family_specs, parse_tokens
    from sdlaws.train.trainer import TrainConfig, train_family

    checks.input_dir("--corpus", corpus)
    checks.output_dir("--out", out)
    budget = parse_tokens(tokens, "--tokens")
    first = parse_tokens(first_checkpoint, "--first-checkpoint") if first_checkpoint else None
    if family is not None and any(v is not None for v in (layers, hidden, heads, lr)):
        raise ConfigError("--layers, --hidden, --heads and --lr describe a single model; drop them with --family "
                          "(family members use the default heads and learning rate)")
    if family is not None:
        specs = family_specs(family, tokens=budget, checkpoints=checkpoints, first_checkpoint_tokens=first,
                             seed=seed)
    elif layers is not None and hidden is not None:
        specs = [TrainSpec(layers=layers, hidden_size=hidden, tokens=budget, checkpoints=checkpoints,
                           first_checkpoint_tokens=first, heads=heads, lr=lr, seed=seed)]
    else:
        raise ConfigError("say which model to train: --family NAME, or --layers L and --hidden H")
    config = TrainConfig(seq_len=seq_len, batch_size=batch_size, device=device, compile=compile_,
                         data_seed=data_seed, time_limit_s=time_limit_s, schedule=schedule,
                         decay_fraction=decay_fraction, checkpoint_every_s=checkpoint_every_s).check()
    result = train_family(specs, load_corpus(corpus), out, config,
                          until_tokens=parse_tokens(until_tokens, "--until-tokens") if until_tokens else None)
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_ else result.summary())


@train_app.command("head")
def head(
    target: Annotated[str, typer.Option(help="Frozen target: a model directory (e.g. a step-N checkpoint of "
                                             "`sdlaws train model`) or any causal LM spec.", show_default=False)],
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `sdlaws train corpus` (the target's).")],
    tokens: Annotated[str, typer.Option(help="Training tokens per head (e.g. 20M).")],
    layers: Annotated[str, typer.Option(help="Decoder layers of the head; comma-separated depths train together "
                                             "on one stream of target features.")] = "1",
    out: Annotated[Path, typer.Option(help="Parent directory of the head directories.")] = Path("runs/heads"),
    checkpoints: Annotated[int, typer.Option(help="Checkpoints, log-spaced in tokens, the last at the budget.")] = 1,
    first_checkpoint: Annotated[Optional[str], typer.Option(help="Tokens at the first checkpoint "
                                                                 "(default: budget / 1000).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: min(3e-3, 1e-3 * 512 / d), "
                                                     "d the target's width).")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per training window.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Windows per optimizer step.")] = 32,
    feature_noise: Annotated[float, typer.Option(help="Width of the uniform noise on the input features "
                                                      "(EAGLE: 0.2; 0 = none).")] = 0.2,
    seed: InitSeed = 0,
    data_seed: Annotated[int, typer.Option(help="Seed of the training windows and feature noise.")] = 0,
    device: Device = "auto",
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile each head on CUDA.")]
    = False,
    time_limit_s: TimeLimit = None,
    until_tokens: UntilTokens = None,
    json_: Annotated[bool, typer.Option("--json", help="Print each head's last checkpoint as JSON.")] = False,
) -> None:
    """Train EAGLE-style draft heads on a frozen target (features on the fly); re-running resumes."""
    from sdlaws.cli.measure import _parse_list
    from sdlaws.train.corpus import load_corpus
    from sdlaws.train.families import parse_tokens
    from sdlaws.train.heads import HeadTrainConfig, describe_heads, train_heads

    depths = _parse_list("--layers", layers, int)
    if not depths or min(depths) < 1 or len(set(depths)) != len(depths):
        raise ConfigError(f"--layers {layers!r}: give distinct depths >= 1, e.g. --layers 1,2,4")
    config = HeadTrainConfig(seq_len=seq_len, batch_size=batch_size, device=device, compile=compile_,
                             data_seed=data_seed, time_limit_s=time_limit_s, feature_noise=feature_noise)
    result = train_heads(target, load_corpus(corpus), out, config, layers=list(depths), tokens=parse_tokens(tokens),
                         checkpoints=checkpoints, lr=lr, seed=seed,
                         first_checkpoint_tokens=parse_tokens(first_checkpoint) if first_checkpoint else None,
                         until_tokens=parse_tokens(until_tokens) if until_tokens else None)
    typer.echo(json.dumps(describe_heads(result), indent=2) if json_ else result.summary())
