"""Training recipes and named families of small decoder-only (``LlamaForCausalLM``) models.

A :class:`TrainSpec` fixes one model's shape (layers, width) and its training run (token budget, log-spaced
checkpoints, learning rate, seed). A family is a named tuple of shapes trained on the same token stream, e.g. the
draft-depth grid of Scylla Thm 1.2. Shapes follow LLaMA (pre-norm, SwiGLU MLP of width ~8/3 d, RoPE,
no biases) with tied input/output embeddings, as in small open models (SmolLM2, Gemma).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sdlaws import checks
from sdlaws.errors import ConfigError

if TYPE_CHECKING:
    from transformers import LlamaConfig

#: Head dimension of LLaMA and most open models; narrower models get one head.
HEAD_DIM = 64
#: SwiGLU hidden width as a multiple of d (LLaMA, Touvron et al. 2023, §2: 2/3 * 4d), rounded up to this.
MLP_RATIO = 8 / 3
MLP_MULTIPLE = 32
#: Peak learning rate at width 512 (Pythia-70M, d=512, used 1e-3; Biderman et al. 2023, Table 1), scaled as 1/d
#: (Pythia-160M, d=768: 6e-4) and capped for very narrow models.
LR_AT_512 = 1e-3
LR_CAP = 3e-3
#: Default first checkpoint: this fraction of the budget, so one run spans three decades of tokens.
FIRST_CHECKPOINT_FRACTION = 1e-3
#: Most tokens a count option takes (a quadrillion: far beyond any run on one GPU).
MAX_TOKENS = 10**15
#: Accepted ranges of a spec's settings: field -> (option, low, high, integer). Wide enough for any model one
#: GPU trains; the memory check of the trainer bounds the sizes further.
SPEC_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "layers": ("--layers", 1, 1024, True), "hidden_size": ("--hidden", 1, 65536, True),
    "tokens": ("--tokens", 1, MAX_TOKENS, True), "checkpoints": ("--checkpoints", 1, 1000, True),
    "first_checkpoint_tokens": ("--first-checkpoint", 1, MAX_TOKENS, True), "heads": ("--heads", 1, 65536, True),
    "intermediate_size": ("intermediate size", 1, 2**20, True), "lr": ("--lr", 1e-12, 1.0, False),
    "seed": ("--seed", 0, 2**63 - 1, True),
}


@dataclass(frozen=True)
class TrainSpec:
    """One model to train: its shape and its training run (a recipe; the parsed spec of a model to load is
    :class:`sdlaws.measure.models.ModelSpec`).

    Parameters
    ----------
    layers, hidden_size : int
        Decoder layers and model width d.
    tokens : int
        Token budget (rounded to whole optimizer steps by the trainer).
    checkpoints : int
        Number of checkpoints, log-spaced in tokens from ``first_checkpoint_tokens`` to ``tokens`` (inclusive).
    first_checkpoint_tokens : int, optional
        Tokens at the first checkpoint (default ``tokens * 1e-3``, at least one step).
    heads, intermediate_size : int, optional
        Attention heads (default d / 64, at least 1) and SwiGLU width (default 8/3 d rounded up to 32).
    lr : float, optional
        Peak learning rate (default ``min(3e-3, 1e-3 * 512 / d)``).
    seed : int
        Initialisation seed.
    name : str
        Directory name; default ``L<layers>-H<hidden>-T<tokens>-s<seed>``.
    """

    layers: int
    hidden_size: int
    tokens: int
    checkpoints: int = 1
    first_checkpoint_tokens: int | None = None
    heads: int | None = None
    intermediate_size: int | None = None
    lr: float | None = None
    seed: int = 0
    name: str = field(default="")

    def __post_init__(self):
        """Check the settings (:data:`SPEC_RANGES`) and the shape, and fill the default name."""
        for name, (option, lo, hi, integer) in SPEC_RANGES.items():
            if getattr(self, name) is not None:
                checks.number(option, getattr(self, name), lo, hi, integer=integer)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads; "
                              "choose a multiple of 64 or pass --heads")
        if not self.name:
            object.__setattr__(self, "name", f"L{self.layers}-H{self.hidden_size}-T{format_tokens(self.tokens)}"
                                             f"-s{self.seed}")

    @property
    def num_heads(self) -> int:
        """Attention heads: ``heads`` or d / 64 (at least 1)."""
        return self.heads or max(1, self.hidden_size // HEAD_DIM)

    @property
    def mlp_size(self) -> int:
        """SwiGLU width: ``intermediate_size`` or 8/3 d rounded up to a multiple of 32."""
        if self.intermediate_size:
            return self.intermediate_size
        return int(math.ceil(MLP_RATIO * self.hidden_size / MLP_MULTIPLE) * MLP_MULTIPLE)

    @property
    def peak_lr(self) -> float:
        """Peak learning rate: ``lr`` or ``min(3e-3, 1e-3 * 512 / d)``."""
        return self.lr if self.lr is not None else min(LR_CAP, LR_AT_512 * 512 / self.hidden_size)

    def non_embedding_params(self) -> int:
        """Parameters outside the (tied) embedding: attention 4d^2, SwiGLU 3 d f, two RMSNorms per layer, final norm."""
        d, f = self.hidden_size, self.mlp_size
        return self.layers * (4 * d * d + 3 * d * f + 2 * d) + d

    def params(self, vocab_size: int) -> int:
        """All parameters: :meth:`non_embedding_params` plus the tied V x d embedding."""
        return self.non_embedding_params() + vocab_size * self.hidden_size

    def train_flops_per_token(self, vocab_size: int, seq_len: int) -> float:
        """Training FLOPs per token, 3 x forward with forward = 2 N + 2 n_layer n_ctx d (Kaplan et al. 2020, Table 1).

        N counts the LM-head matmul (V x d), which dominates narrow models.
        """
        n = self.non_embedding_params() + vocab_size * self.hidden_size
        return 3.0 * (2.0 * n + 2.0 * self.layers * seq_len * self.hidden_size)

    def total_steps(self, tokens_per_step: int) -> int:
        """Optimizer steps of the whole run (at least one)."""
        return max(1, round(self.tokens / tokens_per_step))

    def checkpoint_steps(self, tokens_per_step: int) -> list[int]:
        """Completed-step counts after which a checkpoint is saved: log-spaced, unique, ending at the last step."""
        total = self.total_steps(tokens_per_step)
        if self.checkpoints == 1:
            return [total]
        first_tokens = self.first_checkpoint_tokens or self.tokens * FIRST_CHECKPOINT_FRACTION
        first = min(total, max(1, round(first_tokens / tokens_per_step)))
        steps = np.unique(np.round(np.geomspace(first, total, self.checkpoints)).astype(int))
        return [int(s) for s in steps]

    def llama_config(self, vocab_size: int, max_positions: int, eos_id: int) -> "LlamaConfig":
        """The ``transformers.LlamaConfig`` of this shape (EOS is also BOS and PAD)."""
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=self.hidden_size, intermediate_size=self.mlp_size,
                           num_hidden_layers=self.layers, num_attention_heads=self.num_heads,
                           num_key_value_heads=self.num_heads, max_position_embeddings=max_positions,
                           tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
                           pad_token_id=eos_id, use_cache=True)

    def to_dict(self) -> dict:
        """Plain-type dict of every field."""
        return asdict(self)


def format_tokens(tokens: float) -> str:
    """Compact token count for names: 80000000 -> '80M', 1500 -> '1.5k', 999 -> '999'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:.4g}{unit}"
    return str(int(tokens))


def parse_tokens(text: str, option: str = "token count") -> int:
    """Inverse of :func:`format_tokens` for CLI options: '80M', '1.5k', '2e6', '1000' -> int, in
    ``[1, MAX_TOKENS]``; :class:`ConfigError` naming ``option`` otherwise."""
    text = str(text).strip()
    scale = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}.get(text[-1:], 1.0)
    try:
        value = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise ConfigError(f"{option} {text!r}: cannot read a token count; write e.g. 80M, 1.5k or 2000000") from None
    checks.number(option, round(value) if math.isfinite(value) else value, 1, MAX_TOKENS, integer=True)
    return int(round(value))


#: Named families: (layers, hidden size) shapes trained together on one token stream.
FAMILIES: dict[str, tuple[tuple[int, int], ...]] = {
    # Scylla Thm 1.2: depth 1..8 at two widths.
    "depth": tuple((layers, width) for width in (128, 256) for layers in (1, 2, 3, 4, 6, 8)),
    # draft widths at fixed depth 2.
    "width": tuple((2, width) for width in (64, 128, 192, 256, 384, 512)),
    # drafts for the SDSL plane: widths 64..256, depth 1..8.
    "drafts": tuple((layers, width) for width in (64, 128, 256) for layers in (1, 2, 4, 8)),
    # targets: 3 M .. 85 M non-embedding parameters.
    "targets": ((4, 256), (6, 384), (8, 512), (12, 768)),
    # CPU-sized shapes for tests and --quick runs.
    "tiny": ((1, 32), (2, 32), (2, 64)),
}



def family_specs(name: str, *, tokens: int, checkpoints: int = 1, first_checkpoint_tokens: int | None = None,
                 seed: int = 0) -> list[TrainSpec]:
    """The :class:`TrainSpec` list of family ``name`` with one shared training budget."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return [TrainSpec(layers=layers, hidden_size=width, tokens=tokens, checkpoints=checkpoints,
                      first_checkpoint_tokens=first_checkpoint_tokens, seed=seed)
            for layers, width in FAMILIES[name]]
