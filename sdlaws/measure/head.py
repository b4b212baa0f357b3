"""Feature-level draft heads (EAGLE-style): a few decoder layers that draft from the target's own hidden states.

A head drafts token ``t + 2`` from the pair (the target's feature at ``t``, the token at ``t + 1``)::

    f_t (B, n, h)    x_{t+1} -> target embedding (frozen, shared) -> e (B, n, h)
    x = fc(cat(e, f_t))                      (2h -> h, with bias)
    x = L Llama decoder layers (x)           (the first without input norm)
    f^_{t+1} = target final norm (x)         (frozen, shared)
    logits(x_{t+2}) = target LM head (f^_{t+1})   (frozen, shared)

and keeps drafting from its own prediction: the next pair is (``f^_{t+1}``, the drafted ``x_{t+2}``). The
feature ``f_t`` is the input of the target's LM head (the last hidden state after the final norm): what EAGLE-1/2
feed their draft (``hidden_states = outputs[0]`` of the base model in SafeAILab/EAGLE ``eagle/model/ea_model.py``)
and what vLLM and SGLang pass to their EAGLE drafts.

Followed from SafeAILab/EAGLE ``eagle/model/cnets1.py`` (the EAGLE-2 ``Model``): the concatenation order
(embedding first), ``fc`` with a bias, decoder layers of the target's shape, no input norm in the first layer
(also vLLM ``llama_eagle.py`` and SGLang ``llama_eagle.py``, which cite that line), the target's embedding and LM
head shared rather than copied. One difference: EAGLE-2 sends the last layer's raw output to the LM head, while
here it first goes through the target's final norm (frozen, shared), so every predicted feature has the scale of
the real features it is trained against and is fed back in their place (EAGLE-3 also normalises before its LM
head, with a norm of its own).

The shared target modules are held outside the module tree (:meth:`FeatureHead.attach`), so ``state_dict`` and
``save_pretrained`` hold the head's own weights only, and the ``draft_params`` of a head count those.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaPreTrainedModel,
                                                      LlamaRotaryEmbedding)

from sdlaws.errors import ModelError
from sdlaws.measure.hfcompat import HEAD_MODEL_TYPE, cache_keyword


#: Names of the final norm in the decoders transformers builds (Llama/Mistral/Qwen2: ``norm``; GPT-2: ``ln_f``).
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm")


class HeadConfig(LlamaConfig):
    """A Llama config for the head's layers, plus the target it was built for.

    Parameters
    ----------
    target : str
        The target's model spec (a path or ``random:NAME``), recorded for provenance; the decoder checks the
        shapes of the target it is actually given.
    fc_bias : bool
        Bias of the ``2h -> h`` input projection (True as in EAGLE-2's ``cnets1.py`` and SGLang).
    **kwargs
        ``LlamaConfig`` fields; :func:`head_config` takes them from the target.
    """

    model_type = HEAD_MODEL_TYPE

    def __init__(self, target: str = "", fc_bias: bool = True, **kwargs):
        self.target = target
        self.fc_bias = fc_bias
        super().__init__(**kwargs)


def head_config(target_config, *, layers: int = 1, target: str = "", **overrides: Any) -> HeadConfig:
    """The config of an ``layers``-layer head for a target: its width, heads, MLP width, RoPE and vocabulary.

    EAGLE's released heads copy their target's ``config.json`` with ``num_hidden_layers = 1`` (e.g.
    ``eagle/train/EAGLE-LLaMA3-Instruct-8B``); GPT-2-style targets map to the equivalent Llama fields.

    Raises
    ------
    ModelError
        ``layers < 1`` or an override that is not a config field.
    """
    text = target_config.get_text_config()
    hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
    if not isinstance(layers, int) or layers < 1:
        raise ModelError(f"a draft head needs layers >= 1, got {layers!r}")
    fields = dict(
        vocab_size=int(text.vocab_size), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or hidden // heads,
        max_position_embeddings=int(text.max_position_embeddings),
        rms_norm_eps=getattr(text, "rms_norm_eps", None) or getattr(text, "layer_norm_epsilon", None) or 1e-6,
        rope_parameters=getattr(text, "rope_parameters", None) if text.model_type != "gpt2" else None,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False,
        initializer_range=getattr(text, "initializer_range", 0.02), target=target)
    config = HeadConfig(**fields)
    unknown = [k for k in overrides if not hasattr(config, k)]
    if unknown:
        raise ModelError(f"unknown head config field(s) {unknown}; use fields of a Llama config.json")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class FeatureHead(LlamaPreTrainedModel):
    """The draft head; see the module docstring. Call :meth:`attach` with the target before use.

    Parameters
    ----------
    config : HeadConfig
    """

    config_class = HeadConfig
    base_model_prefix = "head"

    def __init__(self, config: HeadConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.fc = nn.Linear(2 * hidden, hidden, bias=config.fc_bias)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # the fc output enters the first layer unnormalised (EAGLE-2 cnets1.py LlamaDecoderLayer, index 0)
        self.layers[0].input_layernorm = nn.Identity()
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.post_init()

    def attach(self, target) -> "FeatureHead":
        """Share ``target``'s token embedding, final norm and LM head (frozen; not parameters of the head).

        ``target`` is the Hugging Face causal LM the head drafts for; its hidden size must be the head's (the
        logits are the target's own, so its vocabulary is the one drafted from). Returns the head.
        """
        return self.share(*target_modules(target))

    def share(self, embed: nn.Module, norm: nn.Module, lm_head: nn.Module) -> "FeatureHead":
        """Use these token embedding, final norm and LM head (frozen; not parameters of the head); returns the
        head. :meth:`attach` takes them from a target; timing runs pass stand-ins (:func:`stand_in_modules`)."""
        if embed.weight.shape[1] != self.config.hidden_size:
            raise ModelError(f"the head is {self.config.hidden_size} wide but the target's hidden size is "
                             f"{embed.weight.shape[1]}; build or train the head for this target")
        for module in (embed, norm, lm_head):
            module.requires_grad_(False)
        # via __dict__, not attributes: registered submodules would be saved with the head (and counted in it)
        self.__dict__["_shared"] = SimpleNamespace(embed=embed, norm=norm, lm_head=lm_head)
        return self

    @property
    def shared(self) -> SimpleNamespace:
        """The target's ``embed``, ``norm`` and ``lm_head`` (:class:`ModelError` before :meth:`attach`)."""
        if "_shared" not in self.__dict__:
            raise ModelError("the draft head is not attached to a target; call head.attach(target) first")
        return self.__dict__["_shared"]

    def get_input_embeddings(self):
        """The target's token embedding."""
        return self.shared.embed

    def get_output_embeddings(self):
        """The target's LM head (its rows are the logits)."""
        return self.shared.lm_head

    def forward(self, input_ids: torch.Tensor, features: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, past_key_values=None) -> torch.Tensor:
        """Last layer output ``(B, n, h)`` for pairs (``features`` ``(B, n, h)``, ``input_ids`` ``(B, n)``).

        ``attention_mask`` is ``None`` (causal, no cache: training) or an additive ``(B, 1, n, S)`` mask over
        the ``S`` slots of ``past_key_values`` (a transformers ``Cache``; the engine's ``SlotCache``).
        Turn the output into a predicted feature and logits with :meth:`predict`.
        """
        x = self.project(input_ids, features)
        rotary = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=attention_mask, position_ids=position_ids, position_embeddings=rotary,
                      use_cache=past_key_values is not None, **{cache_keyword(self.layers[0]): past_key_values})
        return x

    def project(self, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The first layer's input ``(B, n, h)``: ``fc`` of the pairs' token embeddings (first) and features."""
        return self.fc(torch.cat([self.shared.embed(input_ids).to(features.dtype), features], dim=-1))

    def predict(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(feature, logits)``: the target's final norm of ``hidden`` ``(..., h)``, and its LM head on that."""
        feature = self.shared.norm(hidden)
        return feature, self.shared.lm_head(feature)


# A head directory then loads wherever a model directory does (``AutoModelForCausalLM.from_pretrained``).
AutoConfig.register(HEAD_MODEL_TYPE, HeadConfig)
AutoModelForCausalLM.register(HeadConfig, FeatureHead)


def is_head(model) -> bool:
    """True for a :class:`FeatureHead` (a feature-level draft rather than an independent causal LM), also behind
    the engine's fused wrapper (:class:`sdlaws.measure.fastpath.FastHead`, which keeps it as ``hf_model``)."""
    return isinstance(model, FeatureHead) or isinstance(getattr(model, "hf_model", None), FeatureHead)


def target_modules(target) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(token embedding, final norm, LM head)`` of a Hugging Face causal LM.

    Raises
    ------
    ModelError
        No final norm under one of :data:`FINAL_NORM_NAMES` in the model's decoder.
    """
    decoder = target.get_decoder()
    norm = next((getattr(decoder, n) for n in FINAL_NORM_NAMES if isinstance(getattr(decoder, n, None), nn.Module)),
                None)
    if norm is None:
        raise ModelError(f"{type(target).__name__} has no final norm named {' or '.join(FINAL_NORM_NAMES)}; "
                         "feature-level draft heads support Llama-, Mistral-, Qwen2- and GPT-2-style targets")
    return target.get_input_embeddings(), norm, target.get_output_embeddings()


def stand_in_modules(config: HeadConfig, *, device, dtype: torch.dtype,
                     seed: int = 0) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Random ``(embedding, final RMSNorm, LM head)`` of the shape a head's target has, for timing a head without
    loading its target (a step's time does not depend on the weights)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device(device):
        embed = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps).to(dtype)
        lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
    with torch.no_grad():
        for weight in (embed.weight, lm_head.weight):
            weight.normal_(0.0, config.initializer_range, generator=generator)
    return embed, norm, lm_head


class HeadStep(nn.Module):
    """A head's draft step behind a causal LM's forward signature, for forward-timing tables (``sdlaws measure
    hardware``): the head over ``input_ids``, then the final norm and the LM head, as the engine runs it.

    The features paired with the tokens are their embeddings: stand-ins (one small gather) where the engine
    reads a buffer, since a step's time does not depend on their values.
    """

    def __init__(self, head: FeatureHead):
        super().__init__()
        self.head = head
        self.config = head.config

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the head."""
        return self.head.dtype

    def forward(self, input_ids, position_ids, attention_mask, past_key_values, logits_to_keep: int = 0,
                **_ignored) -> CausalLMOutputWithPast:
        """Logits ``(B, n', V)`` of the head's step on ``input_ids`` ``(B, n)`` (``n' = logits_to_keep`` or ``n``)."""
        features = self.head.shared.embed(input_ids)
        hidden = self.head(input_ids, features, position_ids, attention_mask, past_key_values)
        if logits_to_keep:  # contiguous: see FastDecoderLM.forward (one GEMM, not one weight read per row)
            hidden = hidden[:, -logits_to_keep:].contiguous()
        return CausalLMOutputWithPast(logits=self.head.predict(hidden)[1])


def target_features(target, cache=None, **inputs) -> torch.Tensor:
    """The target's features ``(B, n, h)`` (its LM head's input) for a forward with ``inputs``.

    ``target`` is a Hugging Face causal LM or the engine's fused wrapper of one
    (:class:`sdlaws.measure.fastpath.FastDecoderLM`, through its ``features`` method); ``inputs`` are the
    keyword arguments of a forward (``input_ids``, ``position_ids``, ``attention_mask``, ``use_cache``) and
    ``cache`` its KV cache, passed by the keyword the model takes (:func:`sdlaws.measure.hfcompat.cache_keyword`).
    """
    if hasattr(target, "features"):
        return target.features(past_key_values=cache, **inputs)
    decoder = target.get_decoder()
    extra = {} if cache is None else {cache_keyword(decoder): cache}
    return decoder(**inputs, **extra).last_hidden_state
