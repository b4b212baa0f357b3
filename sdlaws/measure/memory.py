"""Memory guard: refuse a sweep whose largest configuration cannot fit, before anything is allocated.

A configuration (target, draft, batch ``B``, speculation shape) needs at least, in bytes:

- **weights**: every parameter of the target and the draft (counted from their configs, :class:`ModelShape`)
  times the dtype size (a target split over ``tp`` devices: a ``1/tp`` share on each);
- **KV caches**: per model ``2 x layers x B x kv_heads x S x head_dim x dtype size``, where ``S`` is the static
  cache length of the engine (:func:`sdlaws.measure.layout.cache_layout`: longest prompt + new tokens +
  speculation slack, rounded up);
- **activations**: the prefill of ``B`` prompts of width ``W`` (residual stream, MLP intermediate, the additive
  ``(B, W, S)`` attention mask) and the verify block's logits;
- on CUDA, :data:`CUDA_RESERVE_BYTES` for the context, CUDA graphs and allocator.

The sum leaves out fragmentation and temporaries, so it errs low: a configuration it refuses cannot run, and one
it lets through may still run out of memory (and becomes a ``failed`` row). The limit is the device's free
memory (``torch.cuda.mem_get_info``), or on CPU the available host memory (psutil when installed, else
``MemAvailable`` of ``/proc/meminfo``). The random prompt set is checked against host memory before it is
drawn (:func:`check_random_prompts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdlaws.dtypes import dtype_bytes
from sdlaws.errors import ConfigError, InputError
from sdlaws.measure.layout import cache_layout, prefill_rows
from sdlaws.roofline import ModelShape

#: Memory a CUDA process holds besides tensors (context, graphs, allocator pools), bytes; a low figure.
CUDA_RESERVE_BYTES = 256 * 2**20
#: Host bytes per token while the random prompt set is drawn: the int64 array, then the Python lists made from
#: it (an 8-byte slot and a 28-byte int per token).
PROMPT_TOKEN_BYTES = 44


@dataclass(frozen=True)
class Need:
    """Estimated bytes of one configuration, by part."""

    label: str
    weights: float
    kv_cache: float
    activations: float
    reserve: float

    @property
    def total(self) -> float:
        """All parts together."""
        return self.weights + self.kv_cache + self.activations + self.reserve

    def describe(self) -> str:
        """``'12.3 GB (weights 8.0 GB, KV cache 4.1 GB, activations 0.2 GB)'``."""
        parts = [("weights", self.weights), ("KV cache", self.kv_cache), ("activations", self.activations),
                 ("CUDA reserve", self.reserve)]
        return f"{gb(self.total)} ({', '.join(f'{name} {gb(v)}' for name, v in parts if v)})"


def gb(num_bytes: float) -> str:
    """Bytes with 3 significant digits in the largest decimal unit below them (``'1.89 TB'``, ``'279 kB'``)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= size:
            return f"{num_bytes / size:.3g} {unit}"
    return f"{num_bytes:.0f} bytes"


def model_shape(config, name: str) -> ModelShape | None:
    """The :class:`ModelShape` of a transformers config (None for an architecture the roofline cannot read: the
    guard then counts nothing for that model)."""
    try:
        return ModelShape.from_hf_config(config.to_dict(), name=name)
    except (ConfigError, InputError, KeyError, TypeError, ValueError):
        return None


def need(label: str, target: ModelShape | None, draft: ModelShape | None, *, dtype: str, batch_size: int,
         longest_prompt: int, max_new_tokens: int, depth: int, topk: int, budget: int, cuda: bool,
         tp_size: int = 1) -> Need:
    """Lower-bound :class:`Need` of one configuration (``draft`` None for ``ar``; ``depth``/``budget`` 0 there) on
    one device; a target split over ``tp_size`` devices counts its share of weights, KV heads and MLP columns."""
    size = dtype_bytes(dtype)
    layout = cache_layout(longest_prompt, max_new_tokens, depth, topk, budget)
    models = [(m, ways) for m, ways in ((target, tp_size), (draft, 1)) if m is not None]  # the draft runs whole
    weights = sum(m.params / ways for m, ways in models) * size
    kv = sum(2 * m.layers * m.kv_heads * m.head_dim / ways for m, ways in models) * batch_size * layout.num_slots
    kv *= size
    widest = max((m.hidden + m.intermediate / ways for m, ways in models), default=0)
    # the engine prefills in chunks of rows over scratch caches of the prompt slots: a chunk's activations and
    # attention scores, not the batch's (the chunk's scratch KV, at most PREFILL_CHUNK_SLOTS tokens' worth, is
    # left out: a lower bound refuses only what cannot run)
    rows = prefill_rows(batch_size, layout.prompt_width)
    prefill = rows * layout.prompt_width * (widest + layout.prompt_width) * size
    logits = batch_size * layout.num_verify * (target.vocab if target is not None else 0) * 4  # float32
    return Need(label, weights, kv, prefill + logits, CUDA_RESERVE_BYTES if cuda else 0)


def check_fits(needs: list[Need], limit_bytes: float, where: str) -> None:
    """:class:`ConfigError` naming the largest configuration, its estimate and the limit when it exceeds it."""
    if not needs:
        return
    largest = max(needs, key=lambda n: n.total)
    if largest.total > limit_bytes:
        raise ConfigError(f"the largest configuration ({largest.label}) needs at least {largest.describe()} but "
                          f"{where} has {gb(limit_bytes)} free; lower --batch, --max-new-tokens or "
                          "--max-prompt-len, or use fewer layers (random:NAME?num_hidden_layers=N)")


def check_random_prompts(num_prompts: int, max_prompt_len: int) -> None:
    """:class:`ConfigError` when the ``random`` prompt set (``num_prompts`` lists of ``max_prompt_len`` ints) would
    not fit in the available host memory; checked before it is drawn."""
    needed, limit = float(num_prompts) * max_prompt_len * PROMPT_TOKEN_BYTES, host_available_bytes()
    if needed > limit:
        raise ConfigError(f"--num-prompts {num_prompts} random prompts of --max-prompt-len {max_prompt_len} tokens "
                          f"need {gb(needed)} of host memory but the host has {gb(limit)} available; lower them")


def free_bytes(device: str) -> float:
    """Free memory of a CUDA device, or the available host memory for ``cpu``."""
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.mem_get_info(device)[0])
    return host_available_bytes()


def host_available_bytes() -> float:
    """Available host memory: psutil's figure when installed, else ``MemAvailable`` of ``/proc/meminfo``, else
    infinity (the check is skipped where neither exists)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return float(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return math.inf
