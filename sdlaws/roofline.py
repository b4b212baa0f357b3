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

:func:`calibrate` fits the efficiencies and the launch cost to measured ``step`` rows
(:data:`sdlaws.schema.STEP_TIMING`) and reports the residual error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdlaws import schema
from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import Hardware
from sdlaws.shapes import SHAPES

#: Bytes per element of weight / KV dtypes.
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
                  "float8": "fp8", "float8_e4m3fn": "fp8", "e4m3": "fp8"}
ACTIVATION_BYTES = 2.0  # bf16/fp16 activations in all-reduces, also with fp8 or int4 weights

# Kernels per decoder layer of a fused implementation [R, counted on a Llama layer]: input norm, QKV projection,
# rotary embedding, attention, output projection, post-attention norm, gate-up projection, activation x up,
# down projection, residual add (the other add is fused into a norm).
KERNELS_PER_LAYER = 10
KERNELS_PER_PASS = 5  # embedding lookup, final norm, LM head, sampling (2)

# Shapes synthesised from a bare parameter count (ModelShape.from_params) follow Llama-3: hidden / layers ~ 128
# (4096/32 for 8B, 16384/126 for 405B), head_dim 128, 8 KV heads (config.json values in NAMED_CONFIGS).
ASPECT_RATIO = 128
HEAD_DIM = 128
KV_HEADS = 8


def dtype_name(dtype: str) -> str:
    """The one spelling sdlaws prints for a dtype (torch's: ``bf16`` -> ``bfloat16``); :class:`ConfigError` if
    unknown."""
    key = str(dtype).lower().replace("torch.", "")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}")
    return key


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype`` (``bfloat16``, ``bf16``, ``fp8``, ``int4`` ...)."""
    return DTYPE_BYTES[dtype_name(dtype)]


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


def _config_value(text: str):
    """A ``random:`` override value: JSON where it parses (``4``, ``1e-5``, ``true``), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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


#: config.json values of common targets and drafts (Hugging Face model repos named in the comments).
NAMED_CONFIGS: dict[str, dict] = {
    # meta-llama/Meta-Llama-3-8B
    "Llama-3-8B": _llama_cfg(4096, 32, 32, 8, 14336, 128256),
    # meta-llama/Meta-Llama-3-70B
    "Llama-3-70B": _llama_cfg(8192, 80, 64, 8, 28672, 128256),
    # meta-llama/Llama-3.1-405B
    "Llama-3.1-405B": _llama_cfg(16384, 126, 128, 8, 53248, 128256),
    # meta-llama/Llama-3.2-1B and -3B (tied embeddings)
    "Llama-3.2-1B": _llama_cfg(2048, 16, 32, 8, 8192, 128256, tied=True, head_dim=64),
    "Llama-3.2-3B": _llama_cfg(3072, 28, 24, 8, 8192, 128256, tied=True, head_dim=128),
    # meta-llama/Llama-2-7b-hf, -13b-hf, -70b-hf
    "Llama-2-7B": _llama_cfg(4096, 32, 32, 32, 11008, 32000),
    "Llama-2-13B": _llama_cfg(5120, 40, 40, 40, 13824, 32000),
    "Llama-2-70B": _llama_cfg(8192, 80, 64, 8, 28672, 32000),
    # mistralai/Mistral-7B-v0.1
    "Mistral-7B": _llama_cfg(4096, 32, 32, 8, 14336, 32000, model_type="mistral"),
    # Qwen/Qwen2.5-0.5B, -7B, -72B (qkv biases)
    "Qwen2.5-0.5B": _llama_cfg(896, 24, 14, 2, 4864, 151936, tied=True, model_type="qwen2"),
    "Qwen2.5-7B": _llama_cfg(3584, 28, 28, 4, 18944, 152064, model_type="qwen2"),
    "Qwen2.5-72B": _llama_cfg(8192, 80, 64, 8, 29568, 152064, model_type="qwen2"),
    # openai-community/gpt2
    "GPT-2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
}
NAMED_CONFIGS["Llama-3.1-8B"] = NAMED_CONFIGS["Llama-3-8B"]    # same shapes as Llama 3 (rope scaling differs)
NAMED_CONFIGS["Llama-3.1-70B"] = NAMED_CONFIGS["Llama-3-70B"]
_SHAPE_ALIASES = {"llama3405b": "Llama-3.1-405B", "mistral7bv01": "Mistral-7B", "gpt2small": "GPT-2"}


def _shape_key(name: str) -> str:
    """Model name reduced to alphanumerics, without org, -hf/-instruct/-chat and random: prefix."""
    key = str(name).lower().split("/")[-1]
    for junk in ("meta-", "-hf", "-instruct", "-chat", "random:"):
        key = key.replace(junk, "")
    return "".join(ch for ch in key if ch.isalnum())


def named_shape(name: str) -> ModelShape:
    """Shape of a named model (``llama-3.1-70b``, ``Qwen/Qwen2.5-7B-Instruct``, ``random:llama-3-8b`` ...).

    ``random:NAME[?key=value]`` specs resolve through the shape registry (:data:`sdlaws.shapes.SHAPES`, with
    their overrides), so a step table's model and the planner's shape are the same architecture; so do draft
    heads, ``head:random:NAME[?layers=L&key=value]`` (:func:`head_shape`).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the known names.
    """
    head = str(name).startswith(HEAD_PREFIX)
    spec = str(name).removeprefix(HEAD_PREFIX if head else "random:")
    base, _, query = spec.partition("?")
    if base in SHAPES:
        overrides = {k: _config_value(v) for k, v in (item.split("=", 1) for item in query.split("&") if "=" in item)}
        if head:
            return head_shape({**SHAPES[base], **overrides}, name=str(name))
        return ModelShape.from_hf_config({**SHAPES[base], **overrides}, name=str(name))
    keys = {_shape_key(n): n for n in NAMED_CONFIGS}
    keys.update(_SHAPE_ALIASES)
    key = _shape_key(name)
    if key not in keys:
        raise ConfigError(f"unknown model shape {name!r}; use one of {', '.join(NAMED_CONFIGS)}, "
                          "or give a parameter count or a config.json")
    canonical = keys[key]
    return ModelShape.from_hf_config(NAMED_CONFIGS[canonical], name=canonical)


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


@dataclass(frozen=True)
class ServingSetup:
    """A target (and optionally a draft) served on one hardware type: what the step-time functions need.

    The target is split over ``tp`` GPUs (tensor parallel); the draft runs unsplit (replicated), as small drafts
    usually are. ``kv_len`` is the mean cached context per sequence during decode.
    """

    target: ModelShape
    hardware: Hardware
    draft: ModelShape | None = None
    kv_len: int = 1024
    dtype: str = "bfloat16"
    kv_dtype: str | None = None
    tp: int = 1
    forward: Any = None  # a fitted step-time law (sdlaws.plan.cost.StepTimeFit) replacing the roofline

    def __post_init__(self) -> None:
        """Dtypes spelled one way in every plan (``bf16`` is printed as ``bfloat16``); a measured step-time law
        times unsplit forwards only."""
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.kv_dtype is not None:
            object.__setattr__(self, "kv_dtype", dtype_name(self.kv_dtype))
        if self.forward is not None and self.tp != 1:
            raise ConfigError("measured step tables (--steps) time one GPU; tensor parallelism needs the roofline")

    def forward_time_s(self, shape: ModelShape, batch_size, tokens_per_row, tp: int = 1):
        """One pass of ``shape``: the step-time law when one is set, else the roofline."""
        if self.forward is not None:
            b, n = np.broadcast_arrays(np.asarray(batch_size, dtype=float), np.asarray(tokens_per_row, dtype=float))
            return self.forward.time_s(shape, b.ravel(), n.ravel(), float(self.kv_len)).reshape(b.shape)
        return forward_time_s(shape, batch_size, tokens_per_row, self.kv_len, self.hardware, dtype=self.dtype,
                              kv_dtype=self.kv_dtype, tp=tp)

    def with_draft(self, draft: ModelShape) -> "ServingSetup":
        """Copy with another draft."""
        return replace(self, draft=draft)

    def target_time_s(self, batch_size, tokens_per_row):
        """One target pass (decode: 1 token per row; verification: the verified tokens per row)."""
        return self.forward_time_s(self.target, batch_size, tokens_per_row, tp=self.tp)

    def draft_time_s(self, batch_size, tokens_per_row=1):
        """One draft pass (chain: 1 token per row; tree: top-k candidate tokens per row)."""
        if self.draft is None:
            raise ConfigError("no draft model in this serving setup; give a draft size or shape")
        return self.forward_time_s(self.draft, batch_size, tokens_per_row)

    def chain_step_time_s(self, batch_size, gamma):
        """One chain step: ``gamma`` draft passes + one target pass verifying ``gamma + 1`` tokens per row."""
        gamma = np.asarray(gamma, dtype=float)
        return gamma * self.draft_time_s(batch_size, 1) + self.target_time_s(batch_size, gamma + 1)

    def tree_step_time_s(self, batch_size, topk, depth):
        """One tree step: ``depth`` draft passes of ``topk`` tokens per row + verifying ``topk * depth + 1``."""
        topk, depth = np.asarray(topk, dtype=float), np.asarray(depth, dtype=float)
        return depth * self.draft_time_s(batch_size, topk) + self.target_time_s(batch_size, topk * depth + 1)

    def memory_bytes_per_gpu(self, batch_size, tokens_per_row=1) -> np.ndarray:
        """Weights + KV cache per GPU (target split over tp, draft replicated)."""
        cached = self.kv_len + np.asarray(tokens_per_row, dtype=float)
        kv_dtype = self.kv_dtype or self.dtype
        need = (param_bytes(self.target.params, self.dtype) + kv_cache_bytes(self.target, batch_size, cached,
                                                                              kv_dtype)) / self.tp
        if self.draft is not None:
            need = need + param_bytes(self.draft.params, self.dtype) + kv_cache_bytes(self.draft, batch_size,
                                                                                       cached, kv_dtype)
        return need

    def fits(self, batch_size, tokens_per_row=1) -> np.ndarray:
        """Whether weights + KV fit in device memory (activations and fragmentation not counted)."""
        return self.memory_bytes_per_gpu(batch_size, tokens_per_row) <= self.hardware.memory_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict echoing every input."""
        return dict(target=self.target.to_dict(), draft=self.draft.to_dict() if self.draft else None,
                    hardware=self.hardware.to_dict(), kv_len=self.kv_len, dtype=self.dtype,
                    kv_dtype=self.kv_dtype or self.dtype, tp=self.tp)


# ----------------------------------------------------------------------------------------------- calibration

_CAL_PARAMS = ("flops_efficiency", "hbm_efficiency", "launch_overhead_s")
_CAL_BOUNDS = {"flops_efficiency": (1e-3, 1.0), "hbm_efficiency": (1e-3, 1.0), "launch_overhead_s": (1e-9, 1e-2)}


@dataclass(frozen=True)
class Calibration:
    """Roofline factors fitted to measured step times.

    Attributes
    ----------
    hardware : Hardware
        The input hardware with the fitted factors.
    params : pandas.Series
        Fitted ``flops_efficiency``, ``hbm_efficiency``, ``launch_overhead_s``.
    identified : dict
        Per parameter, whether the data constrain it (e.g. FLOP efficiency needs compute-bound rows); an
        unidentified parameter keeps the input hardware's value.
    residuals : pandas.DataFrame
        One row per step measurement: inputs, ``measured_s``, ``predicted_s``, ``pct_error``, ``memory_bound``.
    """

    hardware: Hardware
    params: pd.Series
    identified: dict[str, bool]
    residuals: pd.DataFrame = field(repr=False)

    @property
    def median_abs_pct_error(self) -> float:
        """Median of |predicted / measured - 1| x 100 over the rows."""
        return float(self.residuals["pct_error"].abs().median())

    @property
    def max_abs_pct_error(self) -> float:
        """Largest |predicted / measured - 1| x 100."""
        return float(self.residuals["pct_error"].abs().max())

    def summary(self) -> str:
        """Text report: fitted factors, which are identified, residual error."""
        lines = [f"Roofline calibration on {self.hardware.name} ({len(self.residuals)} step timings)"]
        for name, value in self.params.items():
            note = "" if self.identified[name] else "  (not identified by these rows: kept input value)"
            lines.append(f"  {name:<18} {value:.4g}{note}")
        lines.append(f"  median |error| {self.median_abs_pct_error:.1f}%   max |error| {self.max_abs_pct_error:.1f}%")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (JSON-ready)."""
        return dict(hardware=self.hardware.to_dict(), params=self.params.to_dict(), identified=self.identified,
                    median_abs_pct_error=self.median_abs_pct_error, max_abs_pct_error=self.max_abs_pct_error,
                    residuals=self.residuals.to_dict(orient="records"))


def _row_shape(row: pd.Series, shapes: dict[str, ModelShape]) -> ModelShape:
    """Shape of a step row: given shapes, else a named shape, else from params/layers/hidden."""
    name = str(row["model_name"])
    if name in shapes:
        return shapes[name]
    try:
        return named_shape(name)
    except ConfigError:
        layers = row.get("model_layers")
        hidden = row.get("hidden_size")
        return ModelShape.from_params(float(row["model_params"]), name=name,
                                      layers=int(layers) if pd.notna(layers) else None,
                                      hidden=int(hidden) if pd.notna(hidden) else None)


def _group_rows(step: pd.DataFrame, row_shapes: list[ModelShape]) -> list[tuple[ModelShape, np.ndarray]]:
    """Row indices per distinct shape, so each shape's rows are timed in one vectorised call."""
    groups: dict[ModelShape, list[int]] = {}
    for i, shape in enumerate(row_shapes):
        groups.setdefault(shape, []).append(i)
    return [(shape, np.array(idx)) for shape, idx in groups.items()]


def _breakdown(step: pd.DataFrame, groups, hw: Hardware, dtype: str) -> dict[str, np.ndarray]:
    """forward_breakdown of every step row (arrays in row order)."""
    out = {k: np.empty(len(step)) for k in ("time_s", "overhead_s", "memory_bound")}
    for shape, idx in groups:
        rows = step.iloc[idx]
        parts = forward_breakdown(shape, rows["batch_size"].to_numpy(float), rows["tokens_per_row"].to_numpy(float),
                                  rows["kv_len"].to_numpy(float), hw, dtype=dtype)
        for key in out:
            out[key][idx] = parts[key]
    return out


def calibrate(step_df: pd.DataFrame, hw: Hardware, *, shapes: dict[str, ModelShape] | None = None,
              dtype: str | None = None) -> Calibration:
    """Fit ``flops_efficiency``, ``hbm_efficiency`` and ``launch_overhead_s`` to measured forward-pass times.

    Least squares on log time (``scipy.optimize.least_squares``, bounded, from several starts), so every row
    weighs by its relative error. A factor that no row is sensitive to (no compute-bound rows for the FLOP
    efficiency, no memory-bound rows for the bandwidth) is held at the input value and reported unidentified;
    the per-kernel launch cost is always fitted.

    Parameters
    ----------
    step_df : DataFrame
        Rows of the ``step`` table (:data:`sdlaws.schema.STEP_TIMING`) from one device; failed rows are dropped.
    hw : Hardware
        Peaks to calibrate (the preset of the measured device).
    shapes : dict, optional
        ``model_name -> ModelShape``; otherwise a named shape matching ``model_name`` (``random:llama-3-8b``),
        else a shape from ``model_params``/``model_layers``/``hidden_size``.
    dtype : str, optional
        Compute dtype; default: the rows' ``dtype`` column if uniform, else ``bfloat16``.

    Returns
    -------
    Calibration

    Raises
    ------
    InputError
        No ok rows, rows from several devices, or fewer rows than the 3 parameters.
    """
    from scipy.optimize import least_squares

    step = ok_step_rows(step_df, len(_CAL_PARAMS), "calibration")
    dtype = dtype or _uniform(step, "dtype") or "bfloat16"
    groups = _group_rows(step, [_row_shape(r, shapes or {}) for _, r in step.iterrows()])
    log_measured = np.log(step["median_time_s"].to_numpy(dtype=float))

    def hardware_at(theta: np.ndarray, names: list[str]) -> Hardware:
        """Hardware with the named factors set to exp(theta)."""
        return hw.with_efficiency(**dict(zip(names, np.exp(theta))))

    def fit(names: list[str]) -> Hardware:
        """Best of several bounded least-squares fits of the named factors (log space)."""
        lo = np.log([_CAL_BOUNDS[n][0] for n in names])
        hi = np.log([_CAL_BOUNDS[n][1] for n in names])

        def resid(theta):
            """Log predicted minus log measured time, per row."""
            return np.log(_breakdown(step, groups, hardware_at(theta, names), dtype)["time_s"]) - log_measured

        # Several starts over the log box guard against the kink of max(compute, memory).
        runs = [least_squares(resid, lo + f * (hi - lo), bounds=(lo, hi)) for f in (0.25, 0.5, 0.75)]
        return hardware_at(min(runs, key=lambda r: r.cost).x, names)

    fitted = fit(list(_CAL_PARAMS))
    memory_bound = _breakdown(step, groups, fitted, dtype)["memory_bound"].astype(bool)
    identified = {"flops_efficiency": bool((~memory_bound).any()), "hbm_efficiency": bool(memory_bound.any()),
                  "launch_overhead_s": True}
    if not all(identified.values()):
        fitted = fit([n for n in _CAL_PARAMS if identified[n]])
    parts = _breakdown(step, groups, fitted, dtype)
    measured = np.exp(log_measured)
    residuals = step[["model_name", "batch_size", "tokens_per_row", "kv_len"]].assign(
        measured_s=measured, predicted_s=parts["time_s"], pct_error=100.0 * (parts["time_s"] / measured - 1.0),
        memory_bound=parts["memory_bound"].astype(bool))
    params = pd.Series({n: getattr(fitted, n) for n in _CAL_PARAMS})
    source = f"{hw.source}; calibrated on {len(step)} step timings"
    return Calibration(hardware=fitted.with_efficiency(source=source), params=params, identified=identified,
                       residuals=residuals)


def ok_step_rows(step_df: pd.DataFrame, min_rows: int, what: str) -> pd.DataFrame:
    """Ok ``step`` rows of one device and one tensor-parallel size, at least ``min_rows`` of them (``what`` names
    the fit in messages)."""
    step = step_df[step_df["status"].astype(str).eq("ok")] if "status" in step_df else step_df
    if "gpu_name" in step and step["gpu_name"].nunique() > 1:
        raise InputError(f"step rows come from several devices {sorted(step['gpu_name'].unique())}; fit one "
                         "device at a time (filter on gpu_name)")
    tp = sorted(int(size) for size in schema.tp_sizes(step).unique())
    if len(tp) > 1:
        raise InputError(f"step rows mix tensor-parallel sizes {tp}; fit one GPU configuration at a time "
                         "(filter on tp_size)")
    if len(step) < min_rows:
        raise InputError(f"{what} needs at least {min_rows} ok step rows (got {len(step)}); measure more batch "
                         "sizes / tokens per row")
    return step.reset_index(drop=True)


def _uniform(df: pd.DataFrame, column: str) -> str | None:
    """The single value of a column, or None when it varies or is absent."""
    if column in df and df[column].nunique() == 1 and str(df[column].iloc[0]).strip():
        return str(df[column].iloc[0])
    return None
