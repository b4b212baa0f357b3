"""A lean forward pass for Llama-family decoders (llama, mistral, qwen2) over a Hugging Face model's own weights.

Why: on an H100, a CUDA-graph replay of the stock HF ``LlamaForCausalLM`` forward at batch 1 reaches 30% of the
HBM-bandwidth floor for a 1.2B model and 59% for an 8B one (``docs/benchmarks.md``): it launches ~45 small
kernels per layer (unfused RMSNorm, rotary, separate q/k/v and gate/up projections, GQA ``repeat_kv`` copies).
This module computes the same function with fused QKV and gate/up weights, rotary tables gathered once per forward,
GQA by folding query groups into the query axis (no KV copy), and on CUDA one compiled kernel each for residual add
+ RMSNorm and SwiGLU (:func:`element_kernels`), and where Triton is installed kernels of its own
(:mod:`sdlaws.measure.kernels`, :mod:`sdlaws.measure.projection`): rotary + cache write in one launch, attention over
each row's live slots, residual add + RMSNorm and SwiGLU, and the projections of a decode step's few rows (SwiGLU in
the gate/up epilogue) where they ran faster than cuBLAS at the process's first call. 53% and 80% of the floor
before any of those kernels.

It is a drop-in for the call the engine makes: ``model(input_ids=..., position_ids=..., attention_mask=<(B, 1,
n, S) additive float or bool>, past_key_values=<cache>, logits_to_keep=...)``. On the engine's
:class:`~sdlaws.measure.kvcache.SlotCache` the kernels write keys and values at the cache's write slots
(``SlotLayer.prepare_pair`` hands them the cache tensors and slots); any other transformers cache goes through its
per-layer ``update`` (which returns the whole ``(B, kv_heads, S, D)`` tensors) with rotary and SDPA in PyTorch.
Either way the cache keeps owning the KV and its slot logic.

A model split by tensor parallelism (:mod:`sdlaws.measure.tp`, DTensor weights) runs the same function on each
rank's shards: its ``heads / tp`` query and KV heads and ``intermediate / tp`` MLP columns, the o and down
projections' partial sums all-reduced and a vocabulary-split LM head's logits all-gathered, with plain
``torch.distributed`` collectives on local tensors (no DTensor dispatch per op, and capturable in CUDA graphs).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from transformers.modeling_outputs import CausalLMOutputWithPast

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")

# torch 2.13 renamed all_gather_into_tensor (the old name warns there); older releases have only the old one
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def supports(model, max_cache_len: int = 0) -> bool:
    """True if this fast path reproduces ``model``'s forward for caches of ``max_cache_len`` slots: a Llama-family
    decoder, or a feature-level draft head (:mod:`sdlaws.measure.head`, whose layers are Llama decoder layers)."""
    cfg = getattr(model, "config", None)
    return ((getattr(cfg, "model_type", None) in SUPPORTED_MODEL_TYPES or _is_head(model))
            and _layers_supported(cfg, max_cache_len))


def _layers_supported(cfg, max_cache_len: int) -> bool:
    """Whether decoder layers of config ``cfg`` compute what :class:`_FusedLayers` does."""
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    return (getattr(cfg, "hidden_act", "silu") == "silu" and not getattr(cfg, "mlp_bias", False)
            and (window is None or window >= max_cache_len))


def _is_head(model) -> bool:
    from sdlaws.measure.head import is_head  # head.py builds on transformers' Llama layers; imported when asked

    return is_head(model)


def wrap(model, invariant: bool = False):
    """The :class:`FastDecoderLM` (or :class:`FastHead` for a draft head) of ``model``, cached on it and built
    again when weights it copied have changed since (e.g. a head trained further); ``model`` itself if it is
    already a wrapper or unsupported. With ``invariant`` its projections of up to 16 rows never run on cuBLAS
    (:attr:`_FusedLayers.invariant`; the engine asks it of its target); once set on a wrapper it stays."""
    if isinstance(model, _FusedLayers) or not supports(model):
        return model
    cached = model.__dict__.get("_sdlaws_fast")
    if cached is None or cached.stale():
        # via __dict__, not setattr: a registered submodule would put the wrapper into the model's state_dict
        model.__dict__["_sdlaws_fast"] = (FastHead if _is_head(model) else FastDecoderLM)(model)
    fast = model.__dict__["_sdlaws_fast"]
    fast.invariant = fast.invariant or invariant
    return fast


class _FusedLayers(torch.nn.Module):
    """A stack of Llama decoder layers computed with fused QKV and gate/up weights, rotary tables gathered once
    per forward, GQA folded into the query axis, one fused kernel each for residual add + RMSNorm and SwiGLU, and on
    CUDA the Triton kernels of the attention block and of the projections of few rows: what :class:`FastDecoderLM`
    (a whole causal LM) and :class:`FastHead` (a draft head's layers) share.

    Parameters
    ----------
    config : transformers.PretrainedConfig
        The layers' config (heads, KV heads, head size, RMSNorm epsilon, RoPE positions).
    layers : sequence of transformers decoder layers
        On their final device and dtype (this rank's shards of a split model); their q/k/v and gate/up weights
        are concatenated once (one extra copy of those weights in memory). A layer whose input norm is not an
        RMSNorm (a head's first layer: ``nn.Identity``) takes its input as it is.
    rotary_emb : transformers rotary embedding module
        Its ``inv_freq`` (with any RoPE scaling) and ``attention_scaling`` give the cos/sin tables.
    """

    def __init__(self, config, layers, rotary_emb):
        super().__init__()
        cfg = self.config = config
        q_weight = layers[0].self_attn.q_proj.weight
        # tensor parallel: collectives over the weights' group, on this rank's heads (None: the whole model)
        self.group = q_weight.device_mesh.get_group() if isinstance(q_weight, DTensor) else None
        ranks = 1 if self.group is None else q_weight.device_mesh.size()
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.num_heads = cfg.num_attention_heads // ranks
        self.num_kv_heads = (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads) // ranks
        self.eps = cfg.rms_norm_eps
        weight = _local(q_weight)
        # Triton-fused element-wise kernels on CUDA; plain PyTorch elsewhere (same function)
        self.kernels = element_kernels(weight.device.type == "cuda")
        # and Triton kernels for rotary + cache write + attention over the slot cache (sdlaws.measure.kernels),
        # where Triton is installed (CUDA builds of torch bring it on Linux)
        self.triton = weight.device.type == "cuda" and importlib.util.find_spec("triton") is not None
        if self.triton:  # the split kernels' counters, made here: never inside a CUDA graph capture
            from sdlaws.measure import kernels, projection

            kernels.split_counters(weight.device)
            # add + RMSNorm reducing each row alike whatever the row count; SwiGLU at a bandwidth the compiled
            # shape-polymorphic kernel missed threefold at 1024 rows (both in sdlaws.measure.projection)
            self.kernels = SimpleNamespace(**{**vars(self.kernels), "add_rms_norm": projection.add_rms_norm,
                                              "silu_mul": projection.silu_mul})
        # and with them the projections of few rows (a decode step's): the most rows (batch x tokens) they run on
        # (None: projection.LINEAR_MAX_ROWS; 0: always cuBLAS, as benchmarks compare)
        self.linear_rows: int | None = None
        # up to 16 rows on the kernel only, never on cuBLAS, which picks its kernel (and its sums' order) by the row
        # count: then a verification's rows get the bits the same rows get in an AR step (greedy speculative output
        # equal to the model's own AR output in bf16); the engine sets it on its target
        self.invariant = False
        self.layers = [self._fuse(layer) for layer in layers]
        # the weights the fused ones copy, and their in-place versions now (an optimizer step bumps them)
        self._copied = [p for layer in layers for p in (layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                                        layer.self_attn.v_proj.weight, layer.mlp.gate_proj.weight,
                                                        layer.mlp.up_proj.weight)]
        self._versions = [p._version for p in self._copied]
        # inv_freq already carries rope scaling (e.g. llama3); attention_scaling too
        pos = torch.arange(cfg.max_position_embeddings, device=weight.device, dtype=torch.float32)
        freqs = torch.outer(pos, rotary_emb.inv_freq.to(weight.device, torch.float32))
        emb = torch.cat((freqs, freqs), dim=-1)  # (positions, head_dim), HF half-split layout
        self.cos = (emb.cos() * rotary_emb.attention_scaling).to(weight.dtype)
        self.sin = (emb.sin() * rotary_emb.attention_scaling).to(weight.dtype)

    @property
    def impl(self) -> str:
        """The code path rows timed through this wrapper record (``forward_impl``): "fused-triton" where the
        attention block (and the projections of few rows) run on the Triton kernels, else "fused"."""
        return "fused-triton" if self.triton else "fused"

    def stale(self) -> bool:
        """Whether a weight this wrapper copied (q/k/v, gate/up) was modified in place after it was built."""
        return any(p._version != v for p, v in zip(self._copied, self._versions))

    @staticmethod
    def _fuse(layer) -> SimpleNamespace:
        att, mlp = layer.self_attn, layer.mlp
        qkv_w = torch.cat([_local(att.q_proj.weight), _local(att.k_proj.weight), _local(att.v_proj.weight)]).detach()
        qkv_b = (torch.cat([_local(att.q_proj.bias), _local(att.k_proj.bias), _local(att.v_proj.bias)]).detach()
                 if att.q_proj.bias is not None else None)
        return SimpleNamespace(
            ln1=getattr(layer.input_layernorm, "weight", None), ln2=layer.post_attention_layernorm.weight,
            qkv_w=qkv_w, qkv_b=qkv_b, o_w=_local(att.o_proj.weight), o_b=_local(att.o_proj.bias),
            gate_up_w=torch.cat([_local(mlp.gate_proj.weight), _local(mlp.up_proj.weight)]).detach(),
            down_w=_local(mlp.down_proj.weight))

    def _run(self, x, position_ids, attention_mask, past_key_values, final_norm):
        """The layers on their input ``x`` ``(B, n, hidden)``: ``(x, h)`` after the last one, ``x`` its residual
        stream and ``h`` the RMSNorm of ``x`` with weight ``final_norm`` (fused with the last residual add; None:
        no final norm, ``h`` is None)."""
        cos = self.cos[position_ids]  # (B, n, head_dim), shared by all layers
        sin = self.sin[position_ids]
        if not attention_mask.is_floating_point():  # bool, True = attend: the additive form, once per forward
            attention_mask = torch.where(attention_mask, 0.0, torch.finfo(x.dtype).min).to(x.dtype)
        attention_mask = attention_mask.expand(x.shape[0], *attention_mask.shape[1:])  # one per row
        attend = self._attend_fn(attention_mask, past_key_values, position_ids)
        k = self.kernels
        first = self.layers[0].ln1
        h = x if first is None else F.rms_norm(x, (x.shape[-1],), first, self.eps)
        next_norms = [layer.ln1 for layer in self.layers[1:]] + [final_norm]
        linear, swiglu = self._matmuls(x.shape[0] * x.shape[1])
        for layer, cache_layer, next_norm in zip(self.layers, past_key_values.layers, next_norms):
            qkv = linear(h, layer.qkv_w, layer.qkv_b).view(*x.shape[:2], -1, self.head_dim)
            attn = self._rowwise(attend(qkv, cache_layer, cos, sin), layer.o_w, layer.o_b, linear)
            x, h = k.add_rms_norm(x, attn, layer.ln2, self.eps)
            mlp = self._rowwise(swiglu(h, layer.gate_up_w), layer.down_w, None, linear)
            if next_norm is None:
                return x + mlp, None
            x, h = k.add_rms_norm(x, mlp, next_norm, self.eps)  # h: input of the next layer (or the LM head)
        return x, h

    def _matmuls(self, rows: int):
        """``(linear, swiglu)`` of a forward over ``rows`` rows (batch x tokens): ``linear(x, w, b)`` is
        ``F.linear``'s function and ``swiglu(h, gate_up_w)`` the MLP's activated projection: up to
        :attr:`linear_rows` rows of an unsplit model on the Triton kernel (SwiGLU in its epilogue) or cuBLAS,
        whichever ran faster for the weight's shape on this GPU (:func:`sdlaws.measure.projection.tuned_linear`;
        up to 16 rows of an :attr:`invariant` model the kernel only), else cuBLAS and the element-wise kernel."""
        if self.triton and self.group is None:
            from sdlaws.measure import projection  # needs triton (checked when the wrapper was built)

            if rows <= (projection.LINEAR_MAX_ROWS if self.linear_rows is None else self.linear_rows):
                kernel_only = self.invariant and rows <= projection.INVARIANT_ROWS
                return (functools.partial(projection.tuned_linear, fallback=None if kernel_only else F.linear),
                        functools.partial(projection.tuned_linear, bias=None, swiglu=True,
                                          fallback=None if kernel_only else self._swiglu_cublas))
        return F.linear, functools.partial(self._swiglu_cublas, bias=None)

    def _swiglu_cublas(self, h, weight, bias):
        """The MLP's activated gate/up projection on cuBLAS and the element-wise kernel (``bias`` is None)."""
        return self.kernels.silu_mul(F.linear(h, weight))

    def _rowwise(self, x, weight, bias, linear=F.linear):
        """``linear(x, weight, bias)`` where a split ``weight`` holds this rank's input columns: the partial
        products are all-reduced, then the (replicated) bias is added once."""
        if self.group is None:
            return linear(x, weight, bias)
        out = F.linear(x, weight)
        dist.all_reduce(out, group=self.group)
        return out if bias is None else out + bias

    def _attend_fn(self, mask, cache, positions):
        """The attention of one layer for this forward, ``(qkv, cache_layer, cos, sin) -> (B, n, heads * D)``:
        the Triton kernels (:mod:`sdlaws.measure.kernels`) where they apply (CUDA, the engine's slot cache, one
        mask and position row per batch row, few queries per KV head), else rotary, cache write and SDPA in
        PyTorch; ``mask`` ``(B, 1, n, S)`` additive, ``positions`` ``(B or 1, n)``."""
        groups = self.num_heads // self.num_kv_heads
        bsz, _, n, _ = mask.shape
        if (self.triton and positions.shape[0] == bsz and cache.layers
                and all(hasattr(layer, "prepare_pair") for layer in cache.layers)
                and all(layer.get_max_length() == mask.shape[-1] for layer in cache.layers)):
            from sdlaws.measure import kernels  # needs triton (checked when the wrapper was built)

            if groups * n <= kernels.MAX_QUERIES:  # the rows' live slot ranges: once per forward, for every layer
                attend = functools.partial(kernels.attention, bounds=kernels.live_bounds(mask))
                return functools.partial(self._attention_triton, mask=mask, rope=kernels.rope_write, attend=attend)
            folded = _fold_mask(mask, groups)  # a prefill chunk: fused rotary and cache write, then SDPA
            return functools.partial(self._attention_triton, mask=folded, rope=kernels.rope_write,
                                     attend=_sdpa_folded)
        return functools.partial(self._attention, mask=_fold_mask(mask, groups))

    def _attention_triton(self, qkv, cache_layer, cos, sin, mask, rope, attend):
        keys, values, slots = cache_layer.prepare_pair(qkv[:, :, self.num_heads:])
        q = rope(qkv, cos, sin, slots, keys, values, self.num_heads)  # (B, kv_heads, groups n, D)
        return attend(q, keys, values, mask, qkv.shape[1])

    def _attention(self, qkv, cache_layer, cos, sin, mask):
        bsz, n = qkv.shape[:2]
        heads, kv_heads, dim = self.num_heads, self.num_kv_heads, self.head_dim
        groups = heads // kv_heads
        # on the q and k heads; v passes through
        qkv = self.kernels.rotary(qkv, cos.unsqueeze(2), sin.unsqueeze(2), heads + kv_heads)
        keys, values = _write_kv(cache_layer, qkv[:, :, heads:])  # (B, kv_heads, S, D) each
        # (B, H, n, D) -> (B, kv_heads, groups * n, D): query heads of one KV head are adjacent in HF's layout
        q = qkv[:, :, :heads].transpose(1, 2).reshape(bsz, kv_heads, groups * n, dim)
        return _sdpa_folded(q, keys, values, mask, n)


def kernel_choices(impl: str) -> str:
    """What rows timed on code path ``impl`` record as ``kernel_choices``: on "fused-triton", JSON of the projection
    kernel's choices made so far in this process (:func:`sdlaws.measure.projection.linear_choices`); else empty."""
    if impl != "fused-triton":
        return ""
    from sdlaws.measure import projection  # the Triton path: triton is installed

    return json.dumps(projection.linear_choices(), sort_keys=True)


def _fold_mask(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, 1, n, S)`` -> ``(B, 1, groups * n, S)``: GQA without copying K/V folds the ``groups`` query heads of
    a KV head into the query axis, each with the tokens' mask."""
    bsz, _, n, slots = mask.shape
    return mask.unsqueeze(2).expand(bsz, 1, groups, n, slots).reshape(bsz, 1, groups * n, slots)


def _sdpa_folded(q, keys, values, mask, n):
    """SDPA of folded queries ``(B, kv_heads, groups * n, D)`` with a folded mask; ``(B, n, heads * D)``."""
    bsz, kv_heads, rows, dim = q.shape
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    return out.view(bsz, kv_heads, rows // n, n, dim).permute(0, 3, 1, 2, 4).reshape(bsz, n, -1)


class FastDecoderLM(_FusedLayers):
    """Fused re-implementation of a Llama-family causal LM forward, sharing (not copying) norms and embeddings.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A ``LlamaForCausalLM``/``MistralForCausalLM``/``Qwen2ForCausalLM`` on its final device and dtype, whole
        or split by :func:`sdlaws.measure.tp.shard`. Its q/k/v and gate/up weights (this rank's shards) are
        concatenated once (one extra copy of those weights in memory).
    """

    def __init__(self, model):
        base = model.model
        super().__init__(model.config, base.layers, base.rotary_emb)
        self.hf_model = model
        self.lm_head_w = _local(model.lm_head.weight).detach()  # a plain tensor: not registered on this module
        self.lm_head_split = isinstance(model.lm_head.weight, DTensor)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the wrapped model."""
        return self.hf_model.dtype

    def get_output_embeddings(self):
        """The wrapped model's LM head (its rows are the logits)."""
        return self.hf_model.get_output_embeddings()

    @torch.no_grad()
    def forward(self, input_ids, position_ids, attention_mask, past_key_values, logits_to_keep: int = 0, **_ignored):
        """Logits ``(B, n', vocab)`` for ``input_ids`` ``(B, n)`` (``n' = logits_to_keep`` or ``n``).

        ``attention_mask`` is ``(B, 1, n, S)`` over the cache's ``S`` slots: additive float (0 = attend) or
        bool (True = attend); ``past_key_values`` is a transformers ``Cache`` whose layers' ``update`` writes
        the new keys/values and returns the full ``(B, kv_heads, S, head_dim)`` tensors.
        """
        h = self.features(input_ids, position_ids, attention_mask, past_key_values)
        if logits_to_keep:
            # contiguous, so that the LM head is one GEMM: on a strided slice, F.linear with a weight that needs
            # no grad runs as a batched matmul over the expanded weight, one full weight read per row (torch's
            # matmul folds only inputs whose leading dimensions are contiguous)
            h = h[:, -logits_to_keep:].contiguous()
        return CausalLMOutputWithPast(logits=self._logits(h))  # the same output type as the HF forward it replaces

    @torch.no_grad()
    def features(self, input_ids, position_ids, attention_mask, past_key_values, **_ignored):
        """The LM head's input ``(B, n, hidden)``: the last hidden state after the final norm (same arguments as
        :meth:`forward`; whole on every rank of a split model); feature-level draft heads read it
        (:mod:`sdlaws.measure.head`)."""
        x = self.hf_model.model.embed_tokens(input_ids)
        return self._run(x, position_ids, attention_mask, past_key_values, self.hf_model.model.norm.weight)[1]

    def _logits(self, h):
        """LM head logits ``(B, n, vocab)``; a vocabulary-split head's slices are all-gathered in rank order."""
        logits = self._matmuls(h.shape[0] * h.shape[1])[0](h, self.lm_head_w, None)
        if not self.lm_head_split:
            return logits
        ranks, (bsz, n, part) = dist.get_world_size(self.group), logits.shape
        parts = logits.new_empty((ranks * bsz, n, part))  # rank-major along the batch (the form gloo takes too)
        _all_gather(parts, logits.contiguous(), group=self.group)
        return parts.view(ranks, bsz, n, part).permute(1, 2, 0, 3).reshape(bsz, n, ranks * part)


class FastHead(_FusedLayers):
    """A feature-level draft head (:class:`sdlaws.measure.head.FeatureHead`) with its decoder layers on the fused
    path, in the head's place for the engine and for step timing: same call, same :meth:`predict`.

    Why: the head's stock Hugging Face layers copy K/V for GQA and run unfused norms and rotary; on an H200 one
    such layer of the Llama-3.1-8B shape at batch 64 over 2048-token prompts cost as much per drafted token as
    all 16 fused layers of the 1B-shape draft (``docs/cost-model.md``). The target's embedding, final norm and LM
    head stay the head's shared modules (attached after wrapping, read at each call: the final norm, a GPT-2-style
    target's LayerNorm too, only in :meth:`predict`). Without a cache or a mask (training) the call is the head's
    own forward.
    """

    def __init__(self, head):
        super().__init__(head.config, head.layers, head.rotary_emb)
        self.hf_model = head

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the wrapped head."""
        return self.hf_model.dtype

    def attach(self, target) -> "FastHead":
        """Attach the wrapped head to ``target`` (:meth:`FeatureHead.attach`); returns this wrapper."""
        self.hf_model.attach(target)
        return self

    @property
    def shared(self):
        """The wrapped head's shared target modules (``embed``, ``norm``, ``lm_head``)."""
        return self.hf_model.shared

    def predict(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(feature, logits)`` of a last layer's output, as :meth:`FeatureHead.predict`; an RMSNorm final norm
        (Llama-family targets) as one ``F.rms_norm`` rather than the module's element-wise steps."""
        shared = self.hf_model.shared
        weight = _rms_weight(shared.norm)
        if weight is None:
            return self.hf_model.predict(hidden)
        feature = F.rms_norm(hidden, (hidden.shape[-1],), weight, _norm_eps(shared.norm))
        return feature, shared.lm_head(feature)

    def get_input_embeddings(self):
        """The target's token embedding."""
        return self.hf_model.get_input_embeddings()

    def get_output_embeddings(self):
        """The target's LM head."""
        return self.hf_model.get_output_embeddings()

    def forward(self, input_ids, features, position_ids, attention_mask=None, past_key_values=None):
        """The last layer's output ``(B, n, h)``, as :meth:`FeatureHead.forward` (same arguments); without a cache
        or a mask (training) the head's own forward, gradients and all."""
        head = self.hf_model
        if past_key_values is None or attention_mask is None:
            return head(input_ids, features, position_ids, attention_mask, past_key_values)
        with torch.no_grad():
            return self._run(head.project(input_ids, features), position_ids, attention_mask, past_key_values,
                             None)[0]


def _rms_weight(norm):
    """The weight of ``norm`` if it is an RMSNorm without a bias (transformers' ``*RMSNorm``), else None."""
    if "RMSNorm" not in type(norm).__name__ or getattr(norm, "bias", None) is not None:
        return None
    return norm.weight


def _norm_eps(norm) -> float:
    """The epsilon of a transformers norm module (``variance_epsilon`` for RMSNorms, ``eps`` for LayerNorm)."""
    return getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))


def _local(weight):
    """This rank's shard of a split (DTensor) weight; a whole weight (or None) as it is."""
    return weight.to_local() if isinstance(weight, DTensor) else weight


def _write_kv(cache_layer, kv: torch.Tensor):
    """Write the new keys and values ``kv`` ``(B, n, 2 kv_heads, D)`` (keys' heads, then values') into the cache
    layer; its full ``(B, kv_heads, S, D)`` keys and values. A :class:`~sdlaws.measure.kvcache.SlotLayer` takes
    both in one scatter; any other transformers cache layer through its ``update``."""
    if hasattr(cache_layer, "update_pair"):
        return cache_layer.update_pair(kv)
    k, v = kv.transpose(1, 2).chunk(2, dim=1)
    return cache_layer.update(k, v)


def _rotary(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotated: int) -> torch.Tensor:
    """Rotary embedding of the first ``rotated`` heads of ``qkv`` ``(B, n, heads, D)`` (HF half-split layout:
    ``x * cos + rotate_half(x) * sin``; ``cos``/``sin`` broadcast), the other heads (the values) copied as they
    are: one new tensor, so that keys and values leave it adjacent for one cache write."""
    qk, rest = qkv[:, :, :rotated], qkv[:, :, rotated:]
    half = qk.shape[-1] // 2
    return torch.cat((qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin, rest), dim=2)


def _add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """Residual add and the RMSNorm of its result: ``(x + delta, rms_norm(x + delta) * weight)``."""
    x = x + delta
    return x, F.rms_norm(x, (x.shape[-1],), weight, eps)


def _silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation of the fused gate/up projection ``(..., 2F)`` -> ``(..., F)``."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


#: Compiled specialisations allowed per element-wise function (model widths x dtypes x phases in one process).
RECOMPILE_LIMIT = 64


@functools.lru_cache(maxsize=2)
def element_kernels(fused: bool) -> SimpleNamespace:
    """The element-wise pieces of a layer, eager or each compiled into one fused kernel.

    On CUDA each would otherwise be several tiny kernels (rotary 5, add + RMSNorm 2, SwiGLU 2), whose fixed
    per-kernel cost is ~20% of a batch-1 decode step of an 8B model (profile in ``docs/benchmarks.md``).
    Only these small functions are compiled (shape-polymorphic, no graph breaks): the matmuls, attention and
    KV-cache writes stay eager, so a compiler problem cannot reach the cache bookkeeping.
    """
    fns = {"rotary": _rotary, "add_rms_norm": _add_rms_norm, "silu_mul": _silu_mul}
    if fused:
        # A sweep runs models of several widths and head sizes through these three functions, and each
        # specialisation is one compiled entry: torch's default of 8 per function was hit on an H200 after a few
        # drafts of one suite (FailOnRecompileLimitHit, every later configuration failed).
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        fns = {name: torch.compile(fn, dynamic=True, fullgraph=True) for name, fn in fns.items()}
    return SimpleNamespace(**fns)
