"""The registry of dtypes: names, the aliases people type, bytes per element, which ones a model loads in.

One home for the measuring side (``--dtype`` of ``sdlaws measure``, the memory guard) and the planning side
(the roofline's bytes, ``--dtype``/``--kv-dtype`` of ``sdlaws plan``). Plain strings, no torch: the fit and
plan side runs without it.
"""

from __future__ import annotations

from sdlaws.errors import ConfigError

#: Bytes per element of weight / KV dtypes, keyed by the one spelling sdlaws prints (torch's).
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
#: Other spellings of the same dtypes.
ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
           "float8": "fp8", "float8_e4m3fn": "fp8", "e4m3": "fp8"}
#: Dtypes a model is loaded and measured in (torch dtype names); the others exist only in plans.
LOADABLE = ("bfloat16", "float16", "float32")


def dtype_name(dtype: str) -> str:
    """The one spelling sdlaws prints for a dtype (torch's: ``bf16`` -> ``bfloat16``); :class:`ConfigError` if
    unknown."""
    key = str(dtype).lower().removeprefix("torch.")
    key = ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)}")
    return key


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype`` (``bfloat16``, ``bf16``, ``fp8``, ``int4`` ...)."""
    return DTYPE_BYTES[dtype_name(dtype)]
