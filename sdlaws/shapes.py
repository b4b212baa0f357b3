"""The registry of named model shapes: one home for the architectures that measure, roofline and plan share.

Every entry copies the timing-relevant fields of a published model's ``config.json`` on the Hugging Face hub
(source repo in the comment); ``tiny`` is sdlaws's own test shape. ``sdlaws measure`` builds ``random:NAME``
models from them and :func:`sdlaws.roofline.named_shape` reads their sizes, so a measured step table and the
planner agree on what ``random:qwen2.5-32b`` is. Model names as people write them (``Llama-3-8B``,
``meta-llama/Meta-Llama-3-8B-Instruct``) find their entry through :func:`find_shape`; a ``random:`` spec's
``?key=value`` overrides parse with :func:`parse_overrides`.
"""

from __future__ import annotations

import json

from typing import Any

_LLAMA3_ROPE_8K = {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192}

#: Named shapes (config.json fields), keyed by the name ``random:NAME`` specs use.
SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.2-1B config.json
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling={**_LLAMA3_ROPE_8K, "factor": 32.0}, tie_word_embeddings=True,
                         bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Llama-3.1-8B config.json
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling=_LLAMA3_ROPE_8K, tie_word_embeddings=False,
                         bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Meta-Llama-3-8B config.json
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                       tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Llama-3.1-70B config.json (141 GB in bf16: timing only, override num_hidden_layers to fit)
    "llama-3.1-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                          max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                          rope_scaling=_LLAMA3_ROPE_8K, tie_word_embeddings=False,
                          bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Meta-Llama-3-70B config.json
    "llama-3-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Llama-3.1-405B config.json
    "llama-3.1-405b": dict(model_type="llama", hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
                           num_attention_heads=128, num_key_value_heads=8, vocab_size=128256,
                           max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                           rope_scaling=_LLAMA3_ROPE_8K, tie_word_embeddings=False,
                           bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Llama-3.2-3B config.json
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                         num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling={**_LLAMA3_ROPE_8K, "factor": 32.0}, tie_word_embeddings=True,
                         bos_token_id=128000, eos_token_id=128001),
    # meta-llama/Llama-2-7b-hf config.json
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # meta-llama/Llama-2-13b-hf config.json
    "llama-2-13b": dict(model_type="llama", hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                        num_attention_heads=40, num_key_value_heads=40, vocab_size=32000,
                        max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # meta-llama/Llama-2-70b-hf config.json
    "llama-2-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
                        max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # mistralai/Mistral-7B-v0.1 config.json
    "mistral-7b-v0.1": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                            max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0,
                            sliding_window=4096, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # mistralai/Mistral-7B-v0.3 config.json
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32768,
                       max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0,
                       sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    # Qwen/Qwen2.5-1.5B config.json
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    # Qwen/Qwen2.5-7B config.json
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                       max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643),
    # Qwen/Qwen2.5-32B config.json (65.5 GB in bf16: the largest common dense shape that fits one H200 with its cache)
    "qwen2.5-32b": dict(model_type="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064,
                        max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
                        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643),
    # Qwen/Qwen2.5-72B config.json
    "qwen2.5-72b": dict(model_type="qwen2", hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, vocab_size=152064,
                        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=1000000.0,
                        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643),
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
    # HuggingFaceTB/SmolLM2-360M config.json
    "smollm2-360m": dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
    # HuggingFaceTB/SmolLM2-1.7B config.json
    "smollm2-1.7b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=49152,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=130000.0,
                         tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
    # openai-community/gpt2 config.json
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, n_inner=None, vocab_size=50257,
                 n_positions=1024, layer_norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256),
    # sdlaws test shape: a 2-layer Llama small enough for CPU unit tests
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}


# Names the key of :func:`_key` does not reach: the model card's own spellings of two entries.
_ALIASES = {"llama3405b": "llama-3.1-405b", "gpt2small": "gpt2", "mistral7bv03": "mistral-7b"}


def _key(name: str) -> str:
    """A model name reduced to alphanumerics, without org, -hf/-instruct/-chat and the random: prefix."""
    key = str(name).lower().split("/")[-1]
    for junk in ("meta-", "-hf", "-instruct", "-chat", "random:"):
        key = key.replace(junk, "")
    return "".join(ch for ch in key if ch.isalnum())


_KEYS = {**{_key(name): name for name in SHAPES}, **_ALIASES}


def find_shape(name: str) -> str | None:
    """The registry entry a model name means (``Llama-3-8B``, ``Qwen/Qwen2.5-7B-Instruct`` -> ``qwen2.5-7b``), or
    None when it names none."""
    return name if name in SHAPES else _KEYS.get(_key(name))


def parse_value(text: str) -> Any:
    """An override value: JSON where it parses (``"4"`` -> 4, ``"1e-5"``, ``"true"`` -> True), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(query: str) -> dict[str, Any]:
    """``key=value&key=value`` (the part of a ``random:`` spec after ``?``) as a dict; :class:`ValueError`
    carrying the malformed item otherwise."""
    overrides: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(item)
        overrides[key] = parse_value(value)
    return overrides
