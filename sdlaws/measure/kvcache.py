"""Pre-allocated KV cache with per-row write slots, and the additive attention masks that go with it.

Slot layout (the same for the target and the draft cache): row ``b``'s sequence token ``i`` lives in slot
``pad[b] + i``; prompts are left-padded so that every prompt ends at the same slot. A forward pass writes its
``n`` query tokens to slots chosen per row (``SlotCache.write_slots``, shape ``(B, n)``), so rows advance at
their own pace (ragged acceptance) while every tensor keeps a static shape: the cache is ``(B, H, S, D)`` per
layer for the whole ``generate`` call, which is what lets the engine capture forward passes as CUDA graphs.

Which slots a query may attend to is entirely decided by the 4D mask of :func:`block_mask` (slots outside it,
e.g. pads and rejected draft tokens, are never attended), so the cache never needs to be cleared: it is
rolled back by moving a row's length pointer, and tree branches are compacted with :meth:`SlotCache.move`.

The cache subclasses transformers' ``Cache`` and only relies on ``Cache.update(key, value, layer_idx, ...)``
being called by each attention layer, which holds for Llama- and GPT2-style models in transformers 5.x
(checked on 5.17 and 5.23), or, on the engine's fast path (:mod:`sdlaws.measure.fastpath`), on its layers'
``update_pair`` or ``prepare_pair`` (the cache tensors and write slots for a kernel that writes them itself);
positions and masks are always passed explicitly, so ``get_seq_length`` is unused.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class WriteSlots:
    """Holder of the ``(B, n)`` destination slots of the current forward, shared by a cache's layers."""

    __slots__ = ("slots",)

    def __init__(self):
        self.slots: torch.Tensor | None = None


class LayerStack:
    """Every layer's keys and values in one ``(L, 2, B, H, S, D)`` tensor, so that :meth:`SlotCache.move` is one
    gather and one scatter, not four kernels per layer (on a GPU, each a launch inside the graph of a tree's verify
    phase). Used only while every layer has the same shape, dtype and device; otherwise each layer keeps tensors of
    its own and the cache moves layer by layer."""

    __slots__ = ("num_layers", "tensor", "uniform")

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.tensor: torch.Tensor | None = None
        self.uniform = True

    def views(self, index: int, keys: torch.Tensor, values: torch.Tensor, max_cache_len: int):
        """Layer ``index``'s ``(B, H, S, D)`` keys and values, shaped like ``keys``/``values``: views of the stack
        (allocated from the first layer seen) while they fit it, else tensors of their own."""
        key_shape, value_shape = _full(keys, max_cache_len), _full(values, max_cache_len)
        if self.tensor is None and self.uniform and key_shape == value_shape and keys.dtype == values.dtype:
            self.tensor = keys.new_zeros((self.num_layers, 2, *key_shape))
        stack = self.tensor
        if (stack is not None and stack.shape[2:] == key_shape == value_shape and stack.dtype == keys.dtype
                == values.dtype and stack.device == keys.device == values.device):
            return stack[index, 0], stack[index, 1]
        self.uniform = False
        return keys.new_zeros(key_shape), values.new_zeros(value_shape)

    def allocate(self, layers: list, likes: list[tuple[torch.Tensor, torch.Tensor]], max_cache_len: int) -> None:
        """Allocate every layer of ``layers`` at once, like the ``(keys, values)`` of ``likes`` (one pair per
        layer): stacked only when all pairs share shape, dtype and device, which here is known in advance."""
        kinds = {(_full(k, max_cache_len), _full(v, max_cache_len), k.dtype, v.dtype, k.device, v.device)
                 for k, v in likes}
        self.uniform = self.uniform and len(kinds) == 1
        for index, (layer, (keys, values)) in enumerate(zip(layers, likes)):
            layer.keys, layer.values = self.views(index, keys, values, max_cache_len)
            layer.is_initialized = True


def _full(states: torch.Tensor, max_cache_len: int) -> tuple[int, int, int, int]:
    """``(B, H, S, D)``: the cache shape of ``(B, H, n, D)`` states."""
    batch, heads, _, dim = states.shape
    return batch, heads, max_cache_len, dim


class SlotLayer(CacheLayerMixin):
    """One layer's keys and values, ``(B, H, S, D)``, written at the shared :class:`WriteSlots`."""

    is_compileable = True
    is_sliding = False

    def __init__(self, write: WriteSlots, max_cache_len: int, stack: LayerStack, index: int):
        super().__init__()
        self.write = write
        self.max_cache_len = max_cache_len
        self.stack, self.index = stack, index

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the full ``(B, H, S, D)`` tensors with the dtype/device/heads of the first keys seen (views of
        the cache's :class:`LayerStack`)."""
        self.keys, self.values = self.stack.views(self.index, key_states, value_states, self.max_cache_len)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new ``(B, H, n, D)`` states at ``owner.write_slots`` and return the full cache tensors."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        slots = self.write.slots  # (B, n) long: destination slot of each query token
        self.keys.scatter_(2, _expand_slots(slots, key_states), key_states)
        self.values.scatter_(2, _expand_slots(slots, value_states), value_states)
        return self.keys, self.values

    def update_pair(self, kv_states: torch.Tensor):
        """Write the new keys and values given as one ``(B, n, 2 H, D)`` tensor (the keys' ``H`` heads, then the
        values': the tail of a fused QKV projection) and return the full ``(B, H, S, D)`` keys and values.

        Where this layer's keys and values are adjacent in the :class:`LayerStack`, both go in with one scatter
        (one kernel fewer per layer and forward than :meth:`update`; a launch inside every captured graph)."""
        keys, values, slots = self.prepare_pair(kv_states)
        pair, stack = _pair(kv_states), self.stack.tensor
        if (stack is None or keys.data_ptr() != stack[self.index, 0].data_ptr()
                or values.data_ptr() != stack[self.index, 1].data_ptr()):
            return self.update(pair[0], pair[1])
        stack[self.index].scatter_(3, slots[None, :, None, :, None].expand(pair.shape), pair)
        return keys, values

    def prepare_pair(self, kv_states: torch.Tensor):
        """``(keys, values, slots)`` for a writer of its own (a fused kernel): the full ``(B, H, S, D)`` tensors,
        allocated like the halves of ``kv_states`` ``(B, n, 2 H, D)`` if not yet, and the ``(B, n)`` contiguous
        write slots."""
        if not self.is_initialized:
            self.lazy_initialization(*_pair(kv_states))
        return self.keys, self.values, self.write.slots

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Key length and offset a mask must have: the whole static cache."""
        return self.max_cache_len, 0

    def get_seq_length(self) -> int:
        """Unused (rows have different lengths; positions are passed explicitly); returns 0."""
        return 0

    def get_max_length(self) -> int:
        """Number of slots ``S``."""
        return self.max_cache_len


class SlotCache(Cache):
    """A transformers ``Cache`` of :class:`SlotLayer` s sharing one set of write slots.

    Parameters
    ----------
    num_layers : int
        Decoder layers of the model the cache belongs to.
    max_cache_len : int
        Slots per row ``S``.
    """

    def __init__(self, num_layers: int, max_cache_len: int):
        self._write = WriteSlots()
        self._stack = LayerStack(num_layers)
        super().__init__(layers=[SlotLayer(self._write, max_cache_len, self._stack, i) for i in range(num_layers)])
        # not `self.max_cache_len`: transformers 5.17 defines it as a read-only property of Cache
        self.num_slots = max_cache_len

    @property
    def write_slots(self) -> torch.Tensor | None:
        """``(B, n)`` long: where the next forward writes its ``n`` query tokens, per row."""
        return self._write.slots

    @write_slots.setter
    def write_slots(self, slots: torch.Tensor) -> None:
        """Set the slots of the next forward (read by every layer's ``update``), made contiguous here once for all
        the layers (a kernel that writes the cache itself reads them as a flat array)."""
        self._write.slots = slots.contiguous()

    def write_rows(self, part: "SlotCache", rows: torch.Tensor, start: int, batch: int) -> None:
        """Copy every slot of ``part`` (a cache over ``len(rows)`` rows and ``n`` slots, e.g. a prefill of the
        prompt slots alone) into rows ``rows`` of this cache at slots ``start .. start + n``; a layer not yet
        allocated is allocated first, ``(batch, H, S, D)`` with ``part``'s heads, head size, dtype and device."""
        if not any(layer.is_initialized for layer in self.layers):
            likes = [(theirs.keys[:1].expand(batch, -1, -1, -1), theirs.values[:1].expand(batch, -1, -1, -1))
                     for theirs in part.layers]
            self._stack.allocate(self.layers, likes, self.num_slots)
        for mine, theirs in zip(self.layers, part.layers):
            end = start + theirs.keys.shape[2]
            mine.keys[rows, :, start:end] = theirs.keys
            mine.values[rows, :, start:end] = theirs.values

    def move(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy every layer's keys/values from slots ``src`` to slots ``dst`` (both ``(B, m)``, row-wise).

        All sources are read before any destination is written, so ``src`` and ``dst`` may overlap; an entry
        with ``src == dst`` is a no-op. Used to compact an accepted tree path into consecutive slots.
        """
        stack = self._stack.tensor
        if stack is not None and self._stack.uniform and all(layer.is_initialized for layer in self.layers):
            # (L, 2, B, H, S, D): every layer's keys and values in one gather and one scatter
            def index(slots):
                return slots[None, None, :, None, :, None].expand(*stack.shape[:4], slots.shape[1], stack.shape[5])
            stack.scatter_(4, index(dst), stack.gather(4, index(src)))
            return
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            for buf in (layer.keys, layer.values):
                moved = buf.gather(2, _expand_slots(src, buf))
                buf.scatter_(2, _expand_slots(dst, buf), moved)


def _pair(kv_states: torch.Tensor) -> torch.Tensor:
    """``(B, n, 2 H, D)`` keys then values -> ``(2, B, H, n, D)`` (a view)."""
    batch, n, two_heads, dim = kv_states.shape
    return kv_states.view(batch, n, 2, two_heads // 2, dim).permute(2, 0, 3, 1, 4)


def _expand_slots(slots: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` slots -> ``(B, H, n, D)`` gather/scatter index for a ``(B, H, *, D)`` tensor ``like``."""
    batch, heads, _, dim = like.shape
    return slots[:, None, :, None].expand(batch, heads, slots.shape[1], dim)


def block_mask(prefix_start: torch.Tensor, prefix_end: torch.Tensor, block_start: torch.Tensor,
               ancestors: torch.Tensor, cache_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``(B, 1, n, S)`` for ``n`` queries over a static cache of ``S`` slots.

    Query ``j`` of row ``b`` may attend to the committed prefix, slots ``prefix_start[b] <= s < prefix_end[b]``,
    and to block slot ``block_start[b] + i`` when ``ancestors[b, j, i]`` is true (causal order for a chain,
    ancestor-or-self for a tree). Everything else gets the dtype's most negative value.

    Parameters
    ----------
    prefix_start, prefix_end, block_start : Tensor
        ``(B,)`` long slot indices; the block must lie at or after ``prefix_end``.
    ancestors : Tensor
        ``(B, n, m)`` or ``(n, m)`` bool: query ``j`` sees block slot ``i``.
    cache_len : int
        ``S``.
    dtype : torch.dtype
        The model's compute dtype (an additive float mask works with both eager and sdpa attention; a bool
        mask would be added as 0/1 by eager attention).
    """
    batch = prefix_start.shape[0]
    if ancestors.dim() == 2:
        ancestors = ancestors.expand(batch, *ancestors.shape)
    num_queries, block_len = ancestors.shape[1:]
    slot = torch.arange(cache_len, device=prefix_start.device)
    prefix = (slot >= prefix_start[:, None]) & (slot < prefix_end[:, None])  # (B, S)
    allowed = prefix[:, None, :].expand(batch, num_queries, cache_len).clone()
    cols = block_start[:, None] + torch.arange(block_len, device=prefix_start.device)  # (B, m)
    allowed.scatter_(2, cols[:, None, :].expand(batch, num_queries, block_len), ancestors)
    zero = torch.zeros((), dtype=dtype, device=prefix_start.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]
