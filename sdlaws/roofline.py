"""Roofline cost model of dense decoder-only transformer forward passes (pure functions, units in names).

One forward pass of ``batch_size`` sequences, each feeding ``tokens_per_row`` new tokens on top of ``kv_len``
cached tokens, takes (docs/formulas.md#roofline; the LLM-Viewer / llm-analysis convention,
docs/peers.md#roofline-tools)::

    time_s = max(FLOPs / (peak * flops_efficiency), bytes / (hbm * hbm_efficiency)) + overhead_s + allreduce_s

- FLOPs = 2 * matmul_params * B * n + attention FLOPs (QK^T and PV over the cached and new keys).
- bytes = weights read once per pass + KV cache read and written; activations are ignored (they are
  small next to weights and KV in decode and verification).
- overhead_s = per-kernel launch cost x kernels in the pass (:data:`KERNELS_PER_LAYER` per layer).
- allreduce_s = two ring all-reduces per layer of the activations when the target is split over ``tp`` GPUs.

This reproduces the regime change of Scylla's Thm 1.3 (docs/formulas.md#top-k-versus-batch-size): while the
pass is memory-bound the weight bytes dominate and verifying more tokens per row is nearly free; once B * n
passes the machine balance (``Hardware.machine_balance_flops_per_byte``), time grows linearly in the verified tokens.

:mod:`sdlaws.calibration` fits the efficiencies and the launch cost to measured ``step`` rows; a target and
draft served together, and the step times of speculative decoding built from these passes, are
:mod:`sdlaws.plan.setup`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sdlaws.dtypes import dtype_bytes
from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import Hardware
from sdlaws.shapes import SHAPES, find_shape, parse_overrides

ACTIVATION_BYTES = 2.0  # bf16/fp16 activations in all-reduces, also with fp8 or int4 weights

# Kernels per decoder layer of a fused implementation [R, counted on a Llama layer]: input norm, QKV projection,
# rotary embedding, attention, output projection, post-attention norm, gate-up projection, activation x up,
# down projection, residual add (the other add is fused into a norm).
KERNELS_PER_LAYER = 10
KERNELS_PER_PASS = 5  # embedding lookup, final norm, LM head, sampling (2)

# Shapes synthesised from a bare parameter count (ModelShape.from_params) follow Llama-3: hidden / layers ~ 128
# (4096/32 for 8B, 16384/126 for 405B), head_dim 128, 8 KV heads (config.json values in sdlaws.shapes.SHAPES).
ASPECT_RATIO = 128
HEAD_DIM = 128
KV_HEADS = 8


def peak_flops_per_s(hw: Hardware, dtype: str) -> float:
    """Dense tensor-core peak for the compute dtype.

    fp8/int8 use the FP8 peak where the part has one (else BF16); float32 uses TF32, which is half the BF16 rate
    on every preset's datasheet; int4 is weight-only quantisation with BF16 compute.
    """
    size = dtype_bytes(dtype)
    if size == 1.0 and hw.peak_fp8_flops_per_s:
        return hw.peak_fp8_flops_per_s
    if size == 4.0:
        return hw.peak_bf16_flops_per_s / 2.0
    return hw.peak_bf16_flops_per_s


@dataclass(frozen=True)
class ModelShape:
    """Shapes of a dense decoder-only transformer (the roofline needs nothing else).

    ``params`` counts every parameter (embeddings included); ``tied`` says whether the LM head shares the input
    embedding. ``vocab = 0`` marks a shape synthesised from a bare parameter count. A feature-level draft head
    (``head:random:NAME?layers=L``) is the shape of its ``L`` layers with its target's embedding and LM head,
    plus ``fc_in``: the input width of its projection to ``hidden`` before the layers (``2 x hidden``).
    """

    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    intermediate: int = 0  # MLP width (gated: gate, up, down); 0 = unknown (shape from a bare parameter count)
    fc_in: int = 0  # draft heads: one more GEMM, fc_in -> hidden, before the layers; 0 for a plain decoder

    @property
    def matmul_params(self) -> float:
        """Parameters used in matrix multiplies: all but an untied input embedding (a lookup, no FLOPs)."""
        return self.params - (0 if self.tied else self.vocab * self.hidden)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict."""
        return asdict(self)

    @classmethod
    def from_hf_config(cls, config: str | Path | dict, name: str | None = None) -> "ModelShape":
        """Read a Hugging Face ``config.json`` (path, directory holding it, or dict).

        Supports llama / qwen2 / mistral-style keys (``hidden_size``, ``num_hidden_layers``,
        ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``intermediate_size``, ``vocab_size``,
        ``tie_word_embeddings``; gated MLP) and gpt2 keys (``n_embd``, ``n_layer``, ``n_head``, ``n_inner``,
        ``n_positions``). The parameter count is computed from the shapes.

        Raises
        ------
        InputError
            Missing file or key.
        ConfigError
            Mixture-of-experts config (the dense roofline does not model expert routing).
        """
        cfg, source = _read_config(config)
        for key in ("num_local_experts", "num_experts", "n_routed_experts"):
            if int(cfg.get(key) or 0) > 1:
                raise ConfigError(f"{source}: mixture-of-experts config ({key}={cfg[key]}); the roofline models "
                                  "dense models only")
        if cfg.get("model_type") == "gpt2":
            return _gpt2_shape(cfg, name or cfg.get("_name_or_path") or "gpt2", source)
        return _llama_shape(cfg, name or cfg.get("_name_or_path") or source, source)

    @classmethod
    def from_params(cls, params: float, *, layers: int | None = None, hidden: int | None = None,
                    name: str | None = None) -> "ModelShape":
        """Llama-3-like shape for a bare parameter count (``params ~ 12 * layers * hidden**2``).

        Missing ``layers``/``hidden`` follow :data:`ASPECT_RATIO`; heads of :data:`HEAD_DIM`, :data:`KV_HEADS`
        KV heads. Weight bytes and linear FLOPs depend only on ``params`` and are exact; attention FLOPs and KV
        bytes depend on the synthesised layers/heads and are approximate.
        """
        if not params > 0:
            raise ConfigError(f"parameter count must be > 0 (got {params!r})")
        if layers is None and hidden is None:
            layers = max(1, round((params / (12 * ASPECT_RATIO**2)) ** (1 / 3)))
        if hidden is None:
            hidden = max(1, round(np.sqrt(params / (12 * layers))))
        if layers is None:
            layers = max(1, round(params / (12 * hidden**2)))
        heads = max(1, round(hidden / HEAD_DIM))
        return cls(name=name or f"dense-{params:.3g}", params=float(params), layers=int(layers), hidden=int(hidden),
                   heads=heads, kv_heads=min(heads, KV_HEADS), head_dim=max(1, int(hidden // heads)), vocab=0,
                   tied=True)


def _draft_config(target: ModelShape, hidden: int, layers: int) -> dict:
    """Llama-style config of a draft for ``target``: its vocabulary (so its LM head), tied embeddings, head_dim 64
    below hidden 2048 else 128, KV heads the largest divisor of the heads up to 8, gated MLP of ~8/3 hidden."""
    head_dim = 64 if hidden < 2048 else 128
    heads = hidden // head_dim
    kv_heads = max(d for d in range(1, min(heads, KV_HEADS) + 1) if heads % d == 0)
    inter = int(round(8 * hidden / 3 / 256)) * 256
    return _llama_cfg(hidden, layers, heads, kv_heads, inter, target.vocab, tied=True, head_dim=head_dim)


def min_draft_params(target: ModelShape) -> float:
    """Parameters of the smallest draft :func:`draft_like` builds for ``target`` (one layer of hidden 128)."""
    return ModelShape.from_hf_config(_draft_config(target, 128, 1)).params if target.vocab else 1.0


def draft_like(target: ModelShape, params: float, name: str | None = None) -> ModelShape:
    """A real draft architecture of about ``params`` parameters for ``target``: the target's vocabulary and LM
    head (tied to its own embedding), hidden a multiple of 128 (head_dim 64 or 128, KV heads dividing the
    heads), layers from Llama-3's hidden/layers ~ 128 where the budget allows.

    A target without a vocabulary (a shape from a bare parameter count) gets :meth:`ModelShape.from_params`.

    Raises
    ------
    ConfigError
        ``params`` below the smallest draft (one layer of hidden 128 plus the embedding).
    """
    if target.vocab < 1:
        return ModelShape.from_params(params, name=name)
    candidates = []
    for hidden in range(128, 16384 + 1, 128):
        body = params - target.vocab * hidden - hidden  # tied embedding + final norm
        layers = round(body / (12 * hidden**2 + 2 * hidden))
        if layers >= 1:
            shape = ModelShape.from_hf_config(_draft_config(target, hidden, layers), name=name)
            candidates.append((abs(shape.params / params - 1) + abs(np.log(hidden / (ASPECT_RATIO * layers))) / 8,
                               shape))
    if not candidates:
        raise ConfigError(f"a draft of {params:.3g} parameters cannot hold {target.name}'s embedding "
                          f"({target.vocab} x 128); plan a larger draft")
    best = min(candidates, key=lambda c: c[0])[1]
    return replace(best, name=name or f"draft-{best.params:.3g}")


def _read_config(config: str | Path | dict) -> tuple[dict, str]:
    """Config dict and a source name for messages, from a dict, a config.json or its directory."""
    if isinstance(config, dict):
        return config, "<config dict>"
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise InputError(f"{path}: no such config.json; pass the file or the model directory holding it")
    try:
        return json.loads(path.read_text()), str(path)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _need(cfg: dict, key: str, source: str):
    """Value of a required config key, or an InputError naming it."""
    if cfg.get(key) is None:
        raise InputError(f"{source}: config lacks {key!r}; supported: llama/qwen2/mistral or gpt2 config.json keys")
    return cfg[key]


def _llama_shape(cfg: dict, name: str, source: str) -> ModelShape:
    """Shape and parameter count from llama / qwen2 / mistral-style keys."""
    hidden = int(_need(cfg, "hidden_size", source))
    layers = int(_need(cfg, "num_hidden_layers", source))
    heads = int(_need(cfg, "num_attention_heads", source))
    inter = int(_need(cfg, "intermediate_size", source))
    vocab = int(_need(cfg, "vocab_size", source))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    tied = bool(cfg.get("tie_word_embeddings", False))
    qkv_bias = cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False))
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = hidden * (q_dim + 2 * kv_dim) + q_dim * hidden + (q_dim + 2 * kv_dim if qkv_bias else 0)
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # gated MLP (gate, up, down) + 2 RMSNorm weights
    params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden  # + final norm
    return ModelShape(name=str(name), params=float(params), layers=layers, hidden=hidden, heads=heads,
                      kv_heads=kv_heads, head_dim=head_dim, vocab=vocab, tied=tied, intermediate=inter)


#: Prefix of random draft-head specs (``sdlaws.measure.models``): their shape is :func:`head_shape`'s.
HEAD_PREFIX = "head:random:"


def head_shape(target_config: dict, name: str) -> ModelShape:
    """Shape of an EAGLE-style draft head (:mod:`sdlaws.measure.head`) for a llama-style target config: ``layers``
    (default 1) decoder layers of the target's shape, the target's embedding and LM head, and the ``2h -> h``
    input projection with its bias (``fc_in = 2 x hidden``). Other keys of ``target_config`` are config fields."""
    cfg = dict(target_config)
    cfg["num_hidden_layers"] = int(cfg.pop("layers", 1))
    body = _llama_shape(cfg, name, name)
    hidden = body.hidden
    return replace(body, params=body.params + 2 * hidden * hidden + hidden, fc_in=2 * hidden)


def _gpt2_shape(cfg: dict, name: str, source: str) -> ModelShape:
    """Shape and parameter count from gpt2 keys (learned positions, biases, tied head)."""
    hidden = int(_need(cfg, "n_embd", source))
    layers = int(_need(cfg, "n_layer", source))
    heads = int(_need(cfg, "n_head", source))
    vocab = int(_need(cfg, "vocab_size", source))
    inner = int(cfg.get("n_inner") or 4 * hidden)
    positions = int(cfg.get("n_positions") or 1024)
    # c_attn (h x 3h), c_proj (h x h), c_fc (h x inner), mlp c_proj (inner x h), all with biases; 2 LayerNorms.
    per_layer = (hidden * 3 * hidden + 3 * hidden) + (hidden * hidden + hidden) + (hidden * inner + inner) \
        + (inner * hidden + hidden) + 4 * hidden
    params = layers * per_layer + vocab * hidden + positions * hidden + 2 * hidden
    return ModelShape(name=str(name), params=float(params), layers=layers, hidden=hidden, heads=heads,
                      kv_heads=heads, head_dim=hidden // heads, vocab=vocab,
                      tied=bool(cfg.get("tie_word_embeddings", True)))


def _llama_cfg(hidden, layers, heads, kv_heads, inter, vocab, tied=False, model_type="llama", head_dim=None):
    """A llama-style config.json dict (only the keys the roofline reads)."""
    cfg = dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=kv_heads, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tied)
    if head_dim:
        cfg["head_dim"] = head_dim
    return cfg


def named_shape(name: str) -> ModelShape:
    """Shape of a named model (``llama-3.1-70b``, ``Qwen/Qwen2.5-7B-Instruct``, ``random:llama-3-8b`` ...).

    Every name resolves through the shape registry (:data:`sdlaws.shapes.SHAPES`), so a step table's model and
    the planner's shape are the same architecture: ``random:NAME[?key=value]`` specs with their overrides, draft
    heads ``head:random:NAME[?layers=L&key=value]`` (:func:`head_shape`), other spellings by
    :func:`sdlaws.shapes.find_shape`.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known names) or a malformed override.
    """
    head = str(name).startswith(HEAD_PREFIX)
    spec = str(name).removeprefix(HEAD_PREFIX if head else "random:")
    base, _, query = spec.partition("?")
    if base in SHAPES:
        try:
            config = {**SHAPES[base], **parse_overrides(query)}
        except ValueError as exc:
            raise ConfigError(f"{name}: override {exc} is not key=value") from None
        return head_shape(config, name=str(name)) if head else ModelShape.from_hf_config(config, name=str(name))
    canonical = find_shape(name)
    if canonical is None:
        raise ConfigError(f"unknown model shape {name!r}; use one of {', '.join(SHAPES)}, "
                          "or give a parameter count or a config.json")
    return ModelShape.from_hf_config(SHAPES[canonical], name=canonical)


def param_bytes(params: float, dtype: str = "bfloat16") -> float:
    """Bytes of ``params`` weights stored in ``dtype``."""
    return float(params) * dtype_bytes(dtype)


def kv_bytes_per_token(shape: ModelShape, kv_dtype: str = "bfloat16") -> float:
    """KV-cache bytes per cached token: K and V, per layer, per KV head."""
    return 2.0 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes(kv_dtype)


def kv_cache_bytes(shape: ModelShape, batch_size, kv_len, kv_dtype: str = "bfloat16"):
    """KV-cache bytes of ``batch_size`` sequences of ``kv_len`` tokens."""
    return np.asarray(batch_size, dtype=float) * np.asarray(kv_len, dtype=float) * kv_bytes_per_token(shape, kv_dtype)


def forward_flops(shape: ModelShape, batch_size, tokens_per_row, kv_len):
    """FLOPs of one forward pass: ``2 * matmul_params * tokens`` + attention.

    Attention: QK^T and PV are 2 matmuls of 2 FLOPs per multiply-add, per head and (query, key) pair; a query
    at position i of the n new tokens sees ``kv_len + i + 1`` keys (causal), ``kv_len + (n + 1) / 2`` on average.
    Broadcasts over array arguments.
    """
    tokens = np.asarray(batch_size, dtype=float) * np.asarray(tokens_per_row, dtype=float)
    keys = np.asarray(kv_len, dtype=float) + (np.asarray(tokens_per_row, dtype=float) + 1.0) / 2.0
    attention = 4.0 * shape.layers * shape.heads * shape.head_dim * tokens * keys
    return 2.0 * shape.matmul_params * tokens + attention


def forward_bytes(shape: ModelShape, batch_size, tokens_per_row, kv_len, dtype: str = "bfloat16",
                  kv_dtype: str | None = None):
    """Device-memory bytes of one pass: the weights once, plus the KV cache read and the new entries written."""
    cached = np.asarray(kv_len, dtype=float) + np.asarray(tokens_per_row, dtype=float)
    kv = np.asarray(batch_size, dtype=float) * cached * kv_bytes_per_token(shape, kv_dtype or dtype)
    return shape.matmul_params * dtype_bytes(dtype) + kv


def pass_overhead_s(shape: ModelShape, hw: Hardware, tp: int = 1) -> float:
    """Fixed cost of a pass: ``launch_overhead_s`` per kernel (two more kernels per layer for tp all-reduces)."""
    kernels = (KERNELS_PER_LAYER + (2 if tp > 1 else 0)) * shape.layers + KERNELS_PER_PASS
    return hw.launch_overhead_s * kernels


def allreduce_time_s(shape: ModelShape, batch_size, tokens_per_row, hw: Hardware, tp: int = 1):
    """Two ring all-reduces per layer of the ``B * n * hidden`` activations (tensor parallelism over tp GPUs).

    A ring all-reduce sends ``2 (tp - 1) / tp`` times the buffer per GPU, at half the bidirectional link rate.
    """
    if tp <= 1:
        return np.zeros_like(np.asarray(batch_size, dtype=float) * np.asarray(tokens_per_row, dtype=float))
    if not hw.interconnect_bytes_per_s > 0:
        raise ConfigError(f"hardware {hw.name!r} has no interconnect bandwidth; tensor parallelism needs one")
    tokens = np.asarray(batch_size, dtype=float) * np.asarray(tokens_per_row, dtype=float)
    size = tokens * shape.hidden * ACTIVATION_BYTES  # bytes of one all-reduced activation tensor
    return 2 * shape.layers * 2.0 * (tp - 1) / tp * size / (hw.interconnect_bytes_per_s / 2.0)


def forward_breakdown(shape: ModelShape, batch_size, tokens_per_row, kv_len, hw: Hardware, *,
                      dtype: str = "bfloat16", kv_dtype: str | None = None, tp: int = 1) -> dict[str, np.ndarray]:
    """All terms of the roofline time of one pass (per GPU when ``tp > 1``).

    Returns
    -------
    dict
        ``flops``, ``bytes``, ``compute_s``, ``memory_s``, ``overhead_s``, ``allreduce_s``, ``time_s`` and
        ``memory_bound`` (bool), each broadcast over the array arguments.
    """
    if tp < 1:
        raise ConfigError(f"tensor-parallel size must be >= 1 (got {tp})")
    flops = forward_flops(shape, batch_size, tokens_per_row, kv_len) / tp
    nbytes = forward_bytes(shape, batch_size, tokens_per_row, kv_len, dtype, kv_dtype) / tp
    compute_s = flops / (peak_flops_per_s(hw, dtype) * hw.flops_efficiency)
    memory_s = nbytes / (hw.hbm_bytes_per_s * hw.hbm_efficiency)
    overhead_s = pass_overhead_s(shape, hw, tp)
    allreduce_s = allreduce_time_s(shape, batch_size, tokens_per_row, hw, tp)
    time_s = np.maximum(compute_s, memory_s) + overhead_s + allreduce_s
    return dict(flops=flops, bytes=nbytes, compute_s=compute_s, memory_s=memory_s, overhead_s=overhead_s,
                allreduce_s=allreduce_s, time_s=time_s, memory_bound=memory_s >= compute_s)


def forward_time_s(shape: ModelShape, batch_size, tokens_per_row, kv_len, hw: Hardware, *,
                   dtype: str = "bfloat16", kv_dtype: str | None = None, tp: int = 1):
    """Seconds of one forward pass (see the module docstring); broadcasts over array arguments."""
    return forward_breakdown(shape, batch_size, tokens_per_row, kv_len, hw, dtype=dtype, kv_dtype=kv_dtype,
                             tp=tp)["time_s"]
