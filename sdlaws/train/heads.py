"""Train feature-level draft heads (:mod:`sdlaws.measure.head`) on a frozen target, features computed on the fly.

Each optimizer step draws one batch of windows ``x_0 .. x_T`` (the same seeded stream as :mod:`.trainer`), runs
the frozen target once to get its features ``f_0 .. f_T`` (the LM head's input) and logits, and every head
trained in the run takes its step on them (several depths on one target share the target pass and see the same
tokens). A head is fed the pairs ``(f_i + noise, x_{i+1})`` for ``i < T`` with a causal mask, as EAGLE trains
(teacher forcing on the target's features), and is scored on its predictions ``f^_{i+1}`` with the EAGLE loss
of SafeAILab/EAGLE ``eagle/train/main.py``::

    loss = FEATURE_WEIGHT * smooth_l1(f^_{i+1}, f_{i+1})                              (v_w = 1.0, "vloss")
         + TOKEN_WEIGHT * cross_entropy(softmax(target logits at i+1), head logits)  (p_w = 0.1, "ploss")

both averaged over positions (the feature term also over the hidden dimension). Also from there: AdamW with
betas (0.9, 0.95), gradient clipping by value at 0.5, uniform noise on the input features (``feature_noise``:
EAGLE's ``U(-0.1, 0.1)`` at its 512-token reference length). Not followed: EAGLE's linear decay (here the
trainer's warm-up + cosine schedule) and its offline feature files (here features are recomputed each step).

Checkpoints, resume, progress and time limits are :class:`~sdlaws.train.trainer.FamilyTrainer`'s; the metadata
adds the head's losses, its top-1 agreement with the target on the training windows, and FLOP utilisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sdlaws.errors import ConfigError
from sdlaws.train.corpus import Corpus
from sdlaws.train.families import TrainSpec, format_tokens
from sdlaws.train.trainer import FamilyTrainer, TrainConfig, TrainResult, _Run, utilisation

if TYPE_CHECKING:
    import torch

#: Weights of the feature-regression and token terms of the loss (EAGLE ``train/main.py``: ``v_w``, ``p_w``).
FEATURE_WEIGHT = 1.0
TOKEN_WEIGHT = 0.1

#: What a head's step adds up between checkpoints (metadata: their means).
LOSS_FIELDS = ("train_loss", "train_feature_loss", "train_token_loss", "train_top1")
#: Windows per forward of the held-out top-1 measurement (bounds its activation memory).
HELDOUT_BATCH = 16


@dataclass(frozen=True)
class HeadTrainConfig(TrainConfig):
    """:class:`~sdlaws.train.trainer.TrainConfig` with EAGLE's defaults for heads, plus the feature noise.

    ``grad_clip`` clips each gradient element (EAGLE: ``clip_grad_value_(0.5)``), not the norm;
    ``weight_decay`` is AdamW's default 0.01 that EAGLE keeps. ``feature_noise`` is the width of the uniform
    noise added to the input features (0 turns it off).
    """

    grad_clip: float = 0.5
    weight_decay: float = 0.01
    feature_noise: float = 0.2

    def check(self) -> "HeadTrainConfig":
        """Return self, or raise :class:`ConfigError` for an impossible setting."""
        if not self.feature_noise >= 0:
            raise ConfigError(f"feature noise must be >= 0, got {self.feature_noise}")
        super().check()
        return self

    def resume_key(self) -> dict:
        """The trainer's resume settings plus the feature noise."""
        return {**super().resume_key(), "feature_noise": self.feature_noise}


def head_specs(layers: list[int], target_config, *, tokens: int, checkpoints: int = 1,
               first_checkpoint_tokens: int | None = None, lr: float | None = None, seed: int = 0) -> list[TrainSpec]:
    """One :class:`TrainSpec` per head depth, named ``head-L<layers>-T<tokens>-s<seed>``.

    The width, heads and MLP width are the target's (a head's layers have the target's shape); the default
    learning rate follows the trainer's width rule at the target's width.
    """
    text = target_config.get_text_config()
    return [TrainSpec(layers=n, hidden_size=text.hidden_size, tokens=tokens, checkpoints=checkpoints,
                      first_checkpoint_tokens=first_checkpoint_tokens, heads=text.num_attention_heads, lr=lr,
                      seed=seed, name=f"head-L{n}-T{format_tokens(tokens)}-s{seed}") for n in layers]


class HeadTrainer(FamilyTrainer):
    """Trains draft heads of several depths for one frozen target; see the module docstring.

    Parameters
    ----------
    specs : list of TrainSpec
        From :func:`head_specs`.
    target : transformers.PreTrainedModel
        The frozen target on the training device (:func:`load_target`).
    target_spec : str
        Its model spec, recorded in the heads' configs and metadata.
    corpus, out, config
        As for :class:`~sdlaws.train.trainer.FamilyTrainer`.
    """

    def __init__(self, specs: list[TrainSpec], target, target_spec: str, corpus: Corpus, out: str | Path,
                 config: HeadTrainConfig = HeadTrainConfig()):
        super().__init__(specs, corpus, out, config)
        self.target, self.target_spec = target, target_spec
        # the target's passes, this process (timed as a model's steps: the first ones are left out)
        self.features_clock = SimpleNamespace(timer=[], busy_s=0.0, timed_steps=0, process_steps=0)

    def _resume_key(self, spec: TrainSpec) -> dict:
        """The trainer's key plus the target (a head resumes only on the target it started with)."""
        return {**super()._resume_key(spec), "target": str(Path(self.target_spec).resolve())}

    def _zero_loss(self) -> "torch.Tensor":
        """A head sums every entry of :data:`LOSS_FIELDS` on the device."""
        import torch

        return torch.zeros(len(LOSS_FIELDS), device=self.device)

    def _new_model(self, spec: TrainSpec):
        """A freshly initialised head of ``spec.layers`` layers for the target."""
        from sdlaws.measure.head import FeatureHead, head_config

        config = head_config(self.target.config, layers=spec.layers, target=self.target_spec)
        return FeatureHead(config).attach(self.target)

    def _load_model(self, path: Path):
        """The head saved at ``path``, attached to the target."""
        import torch

        from sdlaws.measure.head import FeatureHead

        return FeatureHead.from_pretrained(path, dtype=torch.float32).attach(self.target)

    def _batch_inputs(self, batch: "torch.Tensor") -> SimpleNamespace:
        """The target's pass over ``batch`` ``(B, T+1)``: ``ids``, ``features`` ``(B, T+1, h)`` and ``logits``
        ``(B, T, V)`` at positions ``1 .. T`` (the distributions the head's predictions are scored against)."""
        import torch

        from sdlaws.measure.head import target_features

        start = self.clock.start()
        with torch.no_grad(), self._autocast():
            features = target_features(self.target, input_ids=batch, use_cache=False)
            logits = self.target.get_output_embeddings()(features[:, 1:])
        self.clock.stop(self.features_clock, start)
        return SimpleNamespace(ids=batch, features=features, logits=logits)

    def _step(self, run: _Run, inputs: SimpleNamespace) -> None:
        """One optimizer step of head ``run`` on the target's pass ``inputs``."""
        import torch
        import torch.nn.functional as F

        self._set_lr(run)
        start = self.clock.start()
        pairs = inputs.features[:, :-1]
        if self.config.feature_noise:
            pairs = pairs + self._noise(pairs, run.step)
        positions = torch.arange(pairs.shape[1], device=self.device)[None]
        with self._autocast():
            predicted, logits = run.model.predict(run.forward(inputs.ids[:, 1:], pairs, positions))
        feature_loss = F.smooth_l1_loss(predicted.float(), inputs.features[:, 1:].float())
        target_p = torch.softmax(inputs.logits.float(), dim=-1)
        token_loss = -(target_p * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
        loss = FEATURE_WEIGHT * feature_loss + TOKEN_WEIGHT * token_loss
        loss.backward()
        torch.nn.utils.clip_grad_value_(run.model.parameters(), self.config.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        self.clock.stop(run, start)
        top1 = (logits.argmax(-1) == inputs.logits.argmax(-1)).float().mean()
        self._account(run, torch.stack([loss, feature_loss, token_loss, top1]).detach())

    def _noise(self, like: "torch.Tensor", step: int) -> "torch.Tensor":
        """Uniform noise of width ``feature_noise`` shaped like ``like``: a function of (data seed, step), so a
        resumed run adds the same noise it would have without the stop."""
        import torch

        gen = torch.Generator(device=self.device).manual_seed(1_000_003 * self.config.data_seed + step)
        noise = torch.rand(like.shape, generator=gen, device=self.device, dtype=torch.float32) - 0.5
        return (noise * self.config.feature_noise).to(like.dtype)

    def _autocast(self):
        """bf16 autocast on CUDA (when configured), a no-op context otherwise."""
        import torch

        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    @staticmethod
    def _loss_fields(run: _Run) -> dict:
        """Means of :data:`LOSS_FIELDS` since the last checkpoint (the head's top-1 agreement with the target on
        the training windows last)."""
        if not run.loss_steps:
            return {**dict.fromkeys(LOSS_FIELDS, float("nan")), "train_loss_steps": 0}
        return {**dict(zip(LOSS_FIELDS, (run.loss_sum / run.loss_steps).tolist())), "train_loss_steps": run.loss_steps}

    def _metadata(self, run: _Run, stopped_early: bool) -> dict:
        """The trainer's metadata with the head's shape, target, loss weights and FLOP utilisation."""
        self.clock.collect(self.features_clock)
        meta = super()._metadata(run, stopped_early)
        params = sum(p.numel() for p in run.model.parameters())
        flops = head_train_flops_per_token(run.model, self.config.seq_len)
        feature_flops = target_flops_per_token(self.target, self.config.seq_len)
        peak = self.peak_flops_per_s
        tokens = self.timed_tokens(run)
        meta.update(
            kind="head", architecture="FeatureHead", params=params, non_embedding_params=params,
            intermediate_size=run.model.config.intermediate_size, target=self.target_spec,
            loss_weights={"feature_smooth_l1": FEATURE_WEIGHT, "token_cross_entropy": TOKEN_WEIGHT},
            feature_noise=self.config.feature_noise, flops_per_token=flops, peak_flops_per_s=peak,
            mfu=utilisation(flops * tokens, run.busy_s, peak),
            mfu_measured=utilisation(flops * tokens, run.busy_s, self.matmul_flops_per_s),
            feature_flops_per_token=feature_flops, feature_time_s=self.features_clock.busy_s,
            feature_mfu=utilisation(feature_flops * self.timed_tokens(self.features_clock),
                                    self.features_clock.busy_s, peak))
        return meta

    def _heldout_fields(self, run: _Run) -> dict:
        """No held-out loss: a head predicts from the target's features, so it has no loss of its own on text
        (its held-out top-1 agreement is :func:`heldout_top1`)."""
        return {}


def head_train_flops_per_token(head, seq_len: int) -> float:
    """Training FLOPs per token of a head: 3 x forward (Kaplan et al. 2020, Table 1: ``2 N + 2 L n_ctx d`` per
    forward) for its own ``N`` parameters, plus the frozen LM head on its predictions (forward ``2 V h`` and the
    input gradient ``2 V h``; no weight gradient)."""
    cfg = head.config
    params = sum(p.numel() for p in head.parameters())
    return 3.0 * (2.0 * params + 2.0 * cfg.num_hidden_layers * seq_len * cfg.hidden_size) \
        + 4.0 * cfg.vocab_size * cfg.hidden_size


def target_flops_per_token(target, seq_len: int) -> float:
    """Forward FLOPs per token of the target's feature pass: ``2 N + 2 L n_ctx d`` with ``N`` its matmul
    parameters (the LM head's included, the embedding lookup not)."""
    text = target.config.get_text_config()
    embed, lm_head = target.get_input_embeddings().weight, target.get_output_embeddings().weight
    matmul = sum(p.numel() for p in target.parameters()) - embed.numel() + (lm_head.numel() if lm_head is embed else 0)
    return 2.0 * matmul + 2.0 * text.num_hidden_layers * seq_len * text.hidden_size


def load_target(spec: str, corpus: Corpus, device: str):
    """The frozen fp32 target for head training; :class:`ConfigError` for a head or a too-small vocabulary."""
    from sdlaws.measure.models import load_model, resolve_device

    target, _, info = load_model(spec, dtype="float32", device=resolve_device(device))
    if info.head:
        raise ConfigError(f"--target {spec} is a draft head; heads are trained on a causal LM target")
    vocab = target.get_output_embeddings().weight.shape[0]
    if vocab < corpus.vocab_size:
        raise ConfigError(f"--target {spec} has {vocab} logits but the corpus has {corpus.vocab_size} token ids; "
                          "train the head on the corpus the target was trained on")
    return target.requires_grad_(False).eval()


def train_heads(target: str, corpus: Corpus, out: str | Path, config: HeadTrainConfig = HeadTrainConfig(), *,
                layers: list[int], tokens: int, checkpoints: int = 1, first_checkpoint_tokens: int | None = None,
                lr: float | None = None, seed: int | Sequence[int] = 0, until_tokens: int | None = None,
                progress: bool = True) -> TrainResult:
    """Train a head of each depth in ``layers`` (for each initialisation seed when ``seed`` lists several) for
    ``target`` on ``corpus`` into ``out/<name>/`` (names from :func:`head_specs`); all of them share one target
    pass per step, so seeds differ in initialisation only. See :class:`HeadTrainer` and, for ``until_tokens``,
    ``FamilyTrainer.train``."""
    model = load_target(target, corpus, config.check().device)  # settings checked before the target loads
    seeds = [seed] if isinstance(seed, int) else list(seed)
    specs = [spec for s in seeds for spec in head_specs(layers, model.config, tokens=tokens, checkpoints=checkpoints,
                                                        first_checkpoint_tokens=first_checkpoint_tokens, lr=lr,
                                                        seed=s)]
    trainer = HeadTrainer(specs, model, target, corpus, out, config)
    return trainer.train(until_tokens=until_tokens, progress=progress)


def heldout_top1(head_paths: list[str | Path], target, tokens, *, seq_len: int,
                 max_tokens: int) -> list[dict[str, float]]:
    """Top-1 agreement of trained heads with ``target`` on held-out ``tokens`` (e.g. the corpus test split):
    non-overlapping windows of ``seq_len + 1`` tokens, about ``max_tokens`` predictions, teacher-forced on the
    target's features as in training but without noise; the share of positions where a head's argmax is the
    target's. One drafted step, so it measures draft quality apart from how errors compound along a chain.

    ``target`` is the frozen model of :func:`load_target`; its pass over each batch is shared by every head (as
    in training). Returns, per head, ``heldout_top1`` and ``heldout_positions``.
    """
    import numpy as np
    import torch

    from sdlaws.measure.head import FeatureHead

    device = next(target.parameters()).device
    heads = [FeatureHead.from_pretrained(p, dtype=torch.float32).to(device).attach(target).eval() for p in head_paths]
    windows = max(1, min(len(tokens) // (seq_len + 1), max_tokens // seq_len))
    ids = torch.as_tensor(np.asarray(tokens[:windows * (seq_len + 1)], dtype=np.int64), device=device)
    agree, positions = np.zeros(len(heads)), 0
    with torch.no_grad():
        for batch in ids.view(-1, seq_len + 1).split(HELDOUT_BATCH):
            counts, positions = _top1_batch(heads, target, batch), positions + batch.shape[0] * seq_len
            agree += counts
    return [{"heldout_top1": float(a / positions), "heldout_positions": positions} for a in agree]


def _top1_batch(heads: list, target, batch: "torch.Tensor") -> list[int]:
    """Per head, the positions of one batch of windows where its argmax is the target's."""
    import torch

    from sdlaws.measure.head import target_features

    features = target_features(target, input_ids=batch, use_cache=False)
    wanted = target.get_output_embeddings()(features[:, 1:]).argmax(-1)
    positions = torch.arange(batch.shape[1] - 1, device=batch.device)[None]
    return [int((head.predict(head(batch[:, 1:], features[:, :-1], positions))[1].argmax(-1) == wanted).sum())
            for head in heads]


def describe_heads(result: TrainResult) -> dict[str, Any]:
    """Per head: the final checkpoint's path, tokens, losses, top-1 agreement and MFU (for ``--json``)."""
    keep = ("pretrain_tokens", "train_loss", "train_feature_loss", "train_token_loss", "train_top1", "mfu")
    return {name: {"path": str(c[-1].path), **{k: c[-1].metadata.get(k) for k in keep}}
            for name, c in result.checkpoints.items() if c}
