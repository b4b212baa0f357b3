"""Small facts about Hugging Face models that both the model loader and the draft head need (a leaf module, so
neither imports the other)."""

from __future__ import annotations

import functools

#: ``model_type`` of a draft head's ``config.json`` (:mod:`sdlaws.measure.head`; how a head directory is told
#: from a causal LM's).
HEAD_MODEL_TYPE = "sdlaws_feature_head"


def cache_keyword(model) -> str:
    """The keyword ``model``'s forward takes its KV cache by: ``cache`` where it has one (transformers 5 renamed
    ``past_key_values``, which warns that it goes in 5.40), else ``past_key_values`` (older transformers, and
    sdlaws's fused forward)."""
    return _cache_keyword(type(model))


@functools.lru_cache(maxsize=None)
def _cache_keyword(cls) -> str:
    """:func:`cache_keyword` per model class (signatures are read once: decode steps call it every step)."""
    import inspect

    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
