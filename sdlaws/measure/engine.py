"""Lossless speculative decoding over Hugging Face causal LMs: AR baseline, chain drafts, top-k tree drafts.

sdlaws runs its own decoding loop over the models' forward passes (not ``generate()``), so that every method
(``ar``, ``chain``, ``tree``) goes through the same machinery and the measured speed reflects the hardware:

- one pre-allocated KV cache per model and batch size (:mod:`sdlaws.measure.kvcache`), with per-row write
  slots and validity expressed only through 4D masks, so ragged batches keep static shapes;
- a step is two phases, draft then verify, each a fixed sequence of tensor ops without host synchronisation,
  captured once as a CUDA graph on GPU (:mod:`sdlaws.measure.graphs`) and run eagerly on CPU; a tree's draft
  grows a pool of candidates and selects its verify block, while a chain whose every node is verified drafts
  through a phase of its own and AR verifies through one (the same results with fewer kernels, tested equal);
- acceptance is computed for the whole batch with tensor ops (:mod:`sdlaws.measure.sampling`,
  :mod:`sdlaws.measure.tree`); randomness is drawn per step from one generator seeded with ``config.seed``.

Verification rules (both exact: the output is distributed as the target's own decoding):

- ``temperature == 0``: a draft token is accepted while it equals the target argmax; the bonus is the target
  argmax after the last accepted token.
- ``temperature > 0``, chain: speculative sampling (Leviathan et al. 2023, arXiv 2211.17192, Alg. 1), draft
  and target at the same temperature.
- ``temperature > 0``, tree: candidates are the draft's deterministic top-k, so the target samples a token at
  every node and the walk follows it while the tree has it (:func:`sdlaws.measure.tree.walk`).

Feature-level drafts (:class:`sdlaws.measure.head.FeatureHead`, EAGLE-style heads) draft from the target's own
features: the verify pass also returns the target's last hidden state (the LM head's input) at every block node,
the commit keeps those of the root and the accepted path, and the next draft phase feeds the head the pairs
(feature at ``i``, token at ``i + 1``) of the newly committed positions before it grows the tree from its own
predicted features (EAGLE-2's ``topK_genrate`` in SafeAILab/EAGLE ``eagle/model/cnets1.py``, with this engine's
static shapes). Verification is the same as for any draft.

Synthetic acceptance (``DecodeConfig.acceptance_profile``, temperature 0; not lossless by design): every forward
pass, tree, mask and cache operation is the real one, but the draft's top-k log-probabilities are replaced by the
profile's (so the tree is EAGLE-2's tree for the profile, the same every step) and the target's choice at each
node is drawn from the profile (:meth:`_Workspace._synthetic_choice`): acceptance is set, not measured, for timing
runs of models whose weights cannot produce it (random weights at realistic scale).

Each step every unfinished row commits its accepted draft tokens plus one target token; a row that has its
``max_new_tokens`` is frozen (its counters stop) while the others finish. Timings use ``time.perf_counter`` with
``torch.cuda.synchronize()`` at every region boundary on CUDA.

Batching: :meth:`SpecDecoder.generate` decodes one static batch until its slowest row is done;
:meth:`SpecDecoder.serve` batches continuously, as serving engines do: between steps, the rows that are done hand
their sequences over and the next waiting prompts are prefilled into them, all in one prefill, so the draft and
verify phases keep their batch shape, buffers and CUDA graphs. Every prefill (a static batch's, a refill) runs
eagerly over scratch caches of the prompt slots alone, in chunks of rows of at most
``layout.PREFILL_CHUNK_SLOTS`` prompt slots, and copies their entries into those rows of the full caches
(:meth:`SlotCache.write_rows`; a row's stale entries are never attended, the masks only reach a row's own prefix).

This module stays one piece: :class:`SpecDecoder` and its ``_Workspace`` are one state machine whose draft,
verify and commit phases share the workspace's buffers and are captured together as CUDA graphs; what stands
apart lives in its own module (cache and masks: ``kvcache``, static sizes: ``layout``, tree bookkeeping: ``tree``,
sampling rules: ``sampling``).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields
from typing import Literal, NamedTuple

import torch

from sdlaws.errors import ConfigError
from sdlaws.measure import fastpath, profile, sampling, tree
from sdlaws.measure.graphs import PhaseRunner
from sdlaws.measure.head import is_head, target_features
from sdlaws.measure.kvcache import SlotCache, block_mask
from sdlaws.measure import layout
from sdlaws.measure.layout import SLOT_ALIGN, cache_layout, furthest_position, round_up
from sdlaws.measure.hfcompat import cache_keyword

#: Batch sizes whose workspace (caches, buffers, CUDA graphs) a decoder keeps; older ones are freed.
MAX_WORKSPACES = 2

#: Attention implementations that apply an arbitrary additive 4D mask (flash-attention ones do not).
MASKED_ATTENTION = ("sdpa", "eager")

@dataclass(frozen=True)
class DecodeConfig:
    """What to decode and how (one configuration of a sweep).

    Attributes
    ----------
    method : {"ar", "chain", "tree"}
        Autoregressive baseline (target only), chain draft, or top-k tree draft.
    num_spec_tokens : int
        ``gamma``: draft tokens per step for chains; tree depth for trees; ignored for ``ar``.
    tree_topk : int
        Tree branching ``k`` per depth (must be 1 for chains).
    tree_budget : int or None
        Tree nodes verified per step (``None``: ``tree_topk * num_spec_tokens``).
    temperature : float
        0 for greedy decoding, else sampling temperature (target and draft alike).
    max_new_tokens : int
        Tokens generated per sequence (EOS ignored, benchmark style).
    seed : int
        Seed of the sampling generator.
    cuda_graphs : bool
        Capture the decode phases as CUDA graphs on a CUDA device (ignored on CPU).
    fused_forward : bool
        Run Llama/Mistral/Qwen2 models through :class:`sdlaws.measure.fastpath.FastDecoderLM` (same function,
        far fewer kernels per layer); other architectures always use their Hugging Face forward.
    acceptance_profile : tuple of tuple of float, or None
        Synthetic acceptance: ``q[d-1][r]`` = P(the target picks the draft's rank-``r`` child at depth ``d`` | path
        accepted so far), one row per depth (:mod:`sdlaws.measure.profile`); None = the target verifies.
        Needs temperature 0 and a draft; nested lists are converted to tuples.

    """

    method: Literal["ar", "chain", "tree"] = "chain"
    num_spec_tokens: int = 4
    tree_topk: int = 1
    tree_budget: int | None = None
    temperature: float = 0.0
    max_new_tokens: int = 128
    seed: int = 0
    cuda_graphs: bool = True
    fused_forward: bool = True
    acceptance_profile: profile.Profile | None = None

    def __post_init__(self) -> None:
        """Nested lists of a profile become tuples (the config stays hashable); values are checked in _validate."""
        rows = self.acceptance_profile
        if isinstance(rows, (list, tuple)):
            object.__setattr__(self, "acceptance_profile",
                               tuple(tuple(r) if isinstance(r, (list, tuple)) else r for r in rows))

    @property
    def depth(self) -> int:
        """Draft tokens along the longest path per step (0 for ``ar``)."""
        return 0 if self.method == "ar" else self.num_spec_tokens

    @property
    def budget(self) -> int:
        """Draft tokens verified per step (0 for ``ar``, ``gamma`` for chains)."""
        if self.method == "ar":
            return 0
        if self.method == "chain":
            return self.num_spec_tokens
        return self.tree_budget if self.tree_budget is not None else self.tree_topk * self.num_spec_tokens


@dataclass
class DecodeStats:
    """Raw counts and summed timings of one or more ``generate`` calls (add with ``+``).

    Field names and meanings are those of :data:`sdlaws.schema.SPEC_RUN`; rates are derived only in
    :mod:`sdlaws.rates`.
    """

    num_batches: int = 0
    num_prompt_tokens: int = 0
    num_new_tokens: int = 0
    num_steps: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_accepted_per_pos: list[int] = field(default_factory=list)
    num_accepted_per_rank: list[int] = field(default_factory=list)
    # Per sequence, in prompt order (concatenated across batches, not summed): the acceptance of each prompt.
    num_drafts_per_seq: list[int] = field(default_factory=list, metadata={"concat": True})
    num_accepted_per_seq: list[int] = field(default_factory=list, metadata={"concat": True})
    num_steps_per_seq: list[int] = field(default_factory=list, metadata={"concat": True})
    prefill_time_s: float = 0.0
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    total_time_s: float = 0.0
    peak_memory_bytes: int = 0

    def __add__(self, other: "DecodeStats") -> "DecodeStats":
        """Sum counts, timings and per-position lists (zero-padded); concatenate per-sequence lists; keep the
        larger peak memory."""
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "peak_memory_bytes":
                out[f.name] = max(a, b)
            elif f.metadata.get("concat"):
                out[f.name] = list(a) + list(b)
            elif isinstance(a, list):
                width = max(len(a), len(b))
                out[f.name] = [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(width)]
            else:
                out[f.name] = a + b
        return DecodeStats(**out)

    def to_row(self) -> dict:
        """The counts and timings as a ``spec`` row fragment (keys exactly as in ``sdlaws.schema.SPEC_RUN``)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else v) for f in fields(self)}


class _Sequence(NamedTuple):
    """One decoded prompt: its new tokens and its own counters (drafts verified, accepted tokens, decode steps)."""

    tokens: list[int]
    drafts: int
    accepted: int
    steps: int


@dataclass
class _Admission:
    """Continuous batching's bookkeeping: the prompt each row decodes (None: frozen, nothing left to load), the
    prompts waiting for a row, and the finished sequences by prompt index."""

    owner: list[int | None]
    waiting: deque[int]
    finished: dict[int, _Sequence] = field(default_factory=dict)

    def busy(self) -> bool:
        """Whether some row still decodes a prompt."""
        return any(prompt is not None for prompt in self.owner)


def _record(stats: DecodeStats, sequences: list[_Sequence]) -> tuple[list[list[int]], DecodeStats]:
    """The sequences' tokens, and ``stats`` with their per-sequence counters (in the given order)."""
    stats.num_drafts_per_seq = [s.drafts for s in sequences]
    stats.num_accepted_per_seq = [s.accepted for s in sequences]
    stats.num_steps_per_seq = [s.steps for s in sequences]
    return [s.tokens for s in sequences], stats


class SpecDecoder:
    """Batched, lossless speculative decoder for one target (and draft) model and one :class:`DecodeConfig`.

    Parameters
    ----------
    target : transformers.PreTrainedModel
        Causal LM already on the wanted device and dtype; put in eval mode.
    draft : transformers.PreTrainedModel or FeatureHead
        A causal LM sharing the target's vocabulary, or a feature-level draft head (:mod:`sdlaws.measure.head`)
        of the target's width, which this decoder attaches to ``target``; on the target's device, in eval mode
        after this call. Unused (may be None) for ``method == "ar"``.
    config : DecodeConfig
    max_prompt_len : int
        Longest prompt ``generate`` will accept; sizes the cache (``max_prompt_len + max_new_tokens`` plus a
        few steps of slack slots per row), so keep it close to the prompt set's longest prompt.

    Raises
    ------
    ConfigError
        For impossible configurations (gamma < 1, topk < 1, budget > topk * depth, missing draft, vocabulary
        or device mismatch, negative temperature, positions beyond the model's limit).

    Examples
    --------
    >>> dec = SpecDecoder(target, draft, DecodeConfig(method="chain", num_spec_tokens=4))  # doctest: +SKIP
    >>> dec.warmup(prompts[:8])                                                             # doctest: +SKIP
    >>> tokens, stats = dec.generate(prompts[:8])                                           # doctest: +SKIP
    """

    def __init__(self, target, draft=None, config: DecodeConfig = DecodeConfig(), *, max_prompt_len: int = 1024):
        self.config = config
        self.target = _forward_model(target.eval(), config, invariant=True)
        self.draft = (_forward_model(draft.eval(), config)
                      if (draft is not None and config.method != "ar") else None)
        self.head = is_head(self.draft)
        if self.head:
            self.draft.attach(target)
        self.max_prompt_len = max_prompt_len
        _validate(self.target, self.draft, config, max_prompt_len)
        self.device = next(target.parameters()).device
        self.dtype = next(target.parameters()).dtype
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.use_graphs = config.cuda_graphs and self.device.type == "cuda"
        self._workspaces: OrderedDict[int, _Workspace] = OrderedDict()

    def generate(self, prompts: list[list[int]]) -> tuple[list[list[int]], DecodeStats]:
        """Decode ``prompts`` together as one batch.

        Parameters
        ----------
        prompts : list of list of int
            Token ids, one (ragged) list per sequence, each 1..``max_prompt_len`` long.

        Returns
        -------
        tokens : list of list of int
            Exactly ``max_new_tokens`` new tokens per sequence.
        stats : DecodeStats
            Counts and timings of this call (``num_batches == 1``).
        """
        self._check_prompts(prompts)
        cfg = self.config
        with torch.inference_mode():
            ws = self._workspace(len(prompts))
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            stats = DecodeStats(num_batches=1, num_prompt_tokens=sum(map(len, prompts)),
                                num_new_tokens=len(prompts) * cfg.max_new_tokens)
            start = self._now()
            ws.prefill(prompts)
            stats.prefill_time_s = self._now() - start
            while not bool(ws.all_done) and stats.num_steps < cfg.max_new_tokens - 1:
                self._step(ws, stats)
            sequences = ws.sequences(list(range(len(prompts))))
            stats.total_time_s = self._now() - start
            self._finish(ws, stats)
        return _record(stats, sequences)

    def serve(self, prompts: list[list[int]], batch_size: int) -> tuple[list[list[int]], DecodeStats]:
        """Decode ``prompts`` with continuous batching over ``batch_size`` rows (slots), as serving engines do.

        The first ``batch_size`` prompts are prefilled together; whenever a row has its ``max_new_tokens``, its
        sequence is recorded and the next waiting prompt is prefilled into that row (the rows done at the same step
        in one prefill, :meth:`_Workspace.refill`, eager, timed as prefill) while the other rows keep their caches,
        so the batch stays full until no prompt waits. The tail runs at the same batch shape with the finished rows
        frozen (their counters stop), as a static batch's finished rows are: the draft and verify phases keep one
        shape and their CUDA graphs.

        Parameters
        ----------
        prompts : list of list of int
            Token ids, one (ragged) list per sequence, each 1..``max_prompt_len`` long; any number of them.
        batch_size : int
            Rows decoded together (fewer when there are fewer prompts).

        Returns
        -------
        tokens : list of list of int
            Exactly ``max_new_tokens`` new tokens per prompt, in prompt order.
        stats : DecodeStats
            Counts and timings of the whole run; ``num_batches`` is ``ceil(len(prompts) / batch_size)``, the static
            batches the same prompts fill, so that per-batch rates (TTFT, TPOT) compare with static rows;
            ``num_steps`` counts the decode steps of the run, the per-sequence counters each prompt's own.
        """
        self._check_prompts(prompts)
        if batch_size < 1:
            raise ConfigError(f"serve() needs batch_size >= 1, got {batch_size}")
        with torch.inference_mode():
            rows = min(batch_size, len(prompts))
            ws = self._workspace(rows)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            stats = DecodeStats(num_batches=-(-len(prompts) // batch_size),
                                num_prompt_tokens=sum(map(len, prompts)),
                                num_new_tokens=len(prompts) * self.config.max_new_tokens)
            start = self._now()
            ws.prefill(prompts[:rows])
            stats.prefill_time_s = self._now() - start
            queue = _Admission(owner=list(range(rows)), waiting=deque(range(rows, len(prompts))))
            self._turn_over(ws, queue, prompts, stats)
            # every step commits at least one token per row, so the run cannot need more steps than this; a row
            # that never reports done must fail loudly, not loop
            for _ in range(len(prompts) * self.config.max_new_tokens):
                if not queue.busy():
                    break
                self._step(ws, stats)
                self._turn_over(ws, queue, prompts, stats)
            else:
                raise RuntimeError("serve(): rows still running after every prompt's max_new_tokens steps")
            stats.total_time_s = self._now() - start
            self._finish(ws, stats)
        return _record(stats, [queue.finished[i] for i in range(len(prompts))])

    def warmup(self, prompts: list[list[int]], batch_size: int | None = None) -> None:
        """Run one untimed ``generate`` (allocates the batch's caches and captures its CUDA graphs); with
        ``batch_size``, one untimed ``serve`` (more prompts than rows also warm a refill up)."""
        if batch_size is None:
            self.generate(prompts)
        else:
            self.serve(prompts, batch_size)

    def _step(self, ws: "_Workspace", stats: DecodeStats) -> None:
        """One decode step of the whole batch: draft phase (if any), verify phase, both timed."""
        ws.draw_uniforms()
        if ws.draft_phase is not None:
            stats.draft_time_s += self._timed(ws.draft_phase)
        stats.verify_time_s += self._timed(ws.verify_phase)
        stats.num_steps += 1

    def _turn_over(self, ws: "_Workspace", queue: "_Admission", prompts: list[list[int]],
                   stats: DecodeStats) -> None:
        """Record the sequences of the rows that have their tokens and prefill the next waiting prompts into them,
        all in one prefill (a row stays frozen once none wait); again while a refilled row is done at once
        (``max_new_tokens`` 1)."""
        while done := [row for row, finished in enumerate(ws.done_rows()) if finished and queue.owner[row] is not None]:
            refill = []
            for row, sequence in zip(done, ws.sequences(done)):
                queue.finished[queue.owner[row]] = sequence
                queue.owner[row] = queue.waiting.popleft() if queue.waiting else None
                if queue.owner[row] is not None:
                    refill.append(row)
            if refill:
                start = self._now()
                ws.refill(refill, [prompts[queue.owner[row]] for row in refill])
                stats.prefill_time_s += self._now() - start

    def _finish(self, ws: "_Workspace", stats: DecodeStats) -> None:
        """Batch-wide counters and peak memory into ``stats``."""
        ws.read_counters(stats)
        if self.device.type == "cuda":
            stats.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def _workspace(self, batch_size: int) -> "_Workspace":
        """The workspace of ``batch_size`` (created on first use; least recently used ones are freed)."""
        if batch_size in self._workspaces:
            self._workspaces.move_to_end(batch_size)
            return self._workspaces[batch_size]
        while len(self._workspaces) >= MAX_WORKSPACES:
            self._workspaces.popitem(last=False)[1].release()
        ws = _Workspace(self, batch_size)
        self._workspaces[batch_size] = ws
        return ws

    def _check_prompts(self, prompts: list[list[int]]) -> None:
        """Raise :class:`ConfigError` for no prompts, an empty prompt or one longer than ``max_prompt_len``."""
        if not prompts:
            raise ConfigError("generate() got no prompts; pass at least one list of token ids")
        lengths = [len(p) for p in prompts]
        if min(lengths) < 1:
            raise ConfigError("generate() got an empty prompt; every prompt needs at least one token")
        if max(lengths) > self.max_prompt_len:
            raise ConfigError(f"a prompt has {max(lengths)} tokens, more than max_prompt_len="
                              f"{self.max_prompt_len}; raise max_prompt_len or truncate the prompts")

    def _now(self) -> float:
        """``time.perf_counter()`` after the device has finished all queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _timed(self, phase: PhaseRunner) -> float:
        """Run ``phase`` once; return its wall time in seconds."""
        phase.prepare()  # CUDA graph capture (first call only) stays out of the phase timings
        start = self._now()
        phase()
        return self._now() - start


def _validate(target, draft, cfg: DecodeConfig, max_prompt_len: int) -> None:
    """Raise :class:`ConfigError` (one line) for an impossible decoder configuration."""
    if cfg.method not in ("ar", "chain", "tree"):
        raise ConfigError(f"unknown method {cfg.method!r}; use 'ar', 'chain' or 'tree'")
    if not cfg.temperature >= 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {cfg.temperature}")
    if cfg.max_new_tokens < 1 or max_prompt_len < 1:
        raise ConfigError("max_new_tokens and max_prompt_len must be >= 1")
    if is_head(target):
        raise ConfigError("a feature-level draft head cannot be the target; pass it as the draft")
    if cfg.method != "ar":
        _validate_draft(target, draft, cfg)
    if cfg.acceptance_profile is not None:
        _validate_profile(cfg)
    for model in (target, draft):
        attn = getattr(model.config, "_attn_implementation", None) if model is not None else None
        if attn not in (None, *MASKED_ATTENTION):
            raise ConfigError(f"attention implementation {attn!r} cannot take sdlaws's 4D tree/padding mask; "
                              "load the models with attn_implementation='sdpa' (or 'eager')")
    limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
    furthest = furthest_position(max_prompt_len, cfg.max_new_tokens, cfg.depth)
    if limit is not None and furthest > limit:
        raise ConfigError(f"max_prompt_len + max_new_tokens (+ draft slack) = {furthest} positions exceed the "
                          f"model's max_position_embeddings={limit}; shorten prompts or max_new_tokens")


def _validate_draft(target, draft, cfg: DecodeConfig) -> None:
    """Checks that need the draft model: presence, draft shape, vocabulary, device."""
    if draft is None:
        raise ConfigError(f"method {cfg.method!r} needs a draft model; pass draft=... or use method='ar'")
    if cfg.num_spec_tokens < 1:
        raise ConfigError(f"num_spec_tokens (gamma / tree depth) must be >= 1, got {cfg.num_spec_tokens}")
    if cfg.tree_topk < 1:
        raise ConfigError(f"tree_topk must be >= 1, got {cfg.tree_topk}")
    if cfg.method == "chain" and (cfg.tree_topk != 1 or cfg.tree_budget not in (None, cfg.num_spec_tokens)):
        raise ConfigError("tree_topk/tree_budget apply to method='tree'; a chain uses tree_topk=1 and no budget")
    if not 1 <= cfg.budget <= cfg.tree_topk * cfg.num_spec_tokens:
        raise ConfigError(f"tree_budget must be in 1..tree_topk*num_spec_tokens="
                          f"{cfg.tree_topk * cfg.num_spec_tokens}, got {cfg.budget}")
    vocab_t, vocab_d = _vocab_size(target), _vocab_size(draft)
    if vocab_t != vocab_d:
        raise ConfigError(f"target and draft vocabularies differ ({vocab_t} vs {vocab_d} logits); "
                          "use a draft with the target's tokenizer")
    if cfg.tree_topk > vocab_t:
        raise ConfigError(f"tree_topk={cfg.tree_topk} exceeds the vocabulary size {vocab_t}")
    if next(target.parameters()).device != next(draft.parameters()).device:
        raise ConfigError("target and draft are on different devices; move both to the same device")


def _validate_profile(cfg: DecodeConfig) -> None:
    """Synthetic acceptance needs valid rows, a draft, greedy decoding (decisions replace sampling), a row per depth."""
    profile.normalize(cfg.acceptance_profile)
    if cfg.method == "ar":
        raise ConfigError("acceptance_profile needs a draft (method 'chain' or 'tree'); 'ar' accepts nothing")
    if cfg.temperature != 0:
        raise ConfigError(f"acceptance_profile needs temperature 0 (synthetic decisions replace sampling), "
                          f"got {cfg.temperature}")
    profile.check_depth(cfg.acceptance_profile, cfg.depth)


def _forward_model(model, config: DecodeConfig, invariant: bool = False):
    """``model`` itself, or its fused fast-path wrapper when ``config.fused_forward`` and supported; ``invariant``
    for the target, whose verifications must sum their rows as its AR steps do (:func:`fastpath.wrap`)."""
    return fastpath.wrap(model, invariant=invariant) if config.fused_forward else model


def _vocab_size(model) -> int:
    """Logits per position (the output embedding's rows; may exceed the tokenizer's vocabulary)."""
    return int(model.get_output_embeddings().weight.shape[0])


def _num_layers(model) -> int:
    """Decoder layers of ``model`` (``num_hidden_layers`` of its text config)."""
    return int(model.config.get_text_config().num_hidden_layers)


def _prefill_chunks(rows: list[int], prompts: list[list[int]], used_slots) -> list[list[tuple[int, list[int]]]]:
    """``(row, prompt)`` pairs in consecutive chunks whose rows x slots (``used_slots`` of the chunk's prompts: its
    longest, rounded up) stay within :data:`~sdlaws.measure.layout.PREFILL_CHUNK_SLOTS`, at least one row each."""
    chunks, chunk, width = [], [], 0
    for row, prompt in zip(rows, prompts):
        grown = max(width, used_slots([prompt]))
        if chunk and (len(chunk) + 1) * grown > layout.PREFILL_CHUNK_SLOTS:
            chunks.append(chunk)
            chunk, grown = [], used_slots([prompt])
        chunk.append((row, prompt))
        width = grown
    return chunks + [chunk] if chunk else chunks


def _forward(model, cache: SlotCache, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
             mask: torch.Tensor, keep_last: int = 0) -> torch.Tensor:
    """One forward pass writing ``ids`` ``(B, n)`` to cache ``slots`` ``(B, n)``; returns logits ``(B, n', V)``."""
    cache.write_slots = slots
    extra = {"logits_to_keep": keep_last} if keep_last else {}
    extra[cache_keyword(model)] = cache
    out = model(input_ids=ids, position_ids=positions, attention_mask=mask, use_cache=True, **extra)
    return out.logits


def _forward_head(head, cache: SlotCache, ids: torch.Tensor, features: torch.Tensor, positions: torch.Tensor,
                  slots: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One draft-head forward on pairs (``features`` ``(B, n, h)``, ``ids`` ``(B, n)``) written to cache ``slots``;
    returns the last layer's output ``(B, n, h)`` (:meth:`FeatureHead.predict` turns it into features, logits)."""
    cache.write_slots = slots
    return head(ids, features, positions, attention_mask=mask, past_key_values=cache)


class _Workspace:
    """Caches, buffers and phase runners of one decoder for one batch size (reused across calls)."""

    def __init__(self, dec: SpecDecoder, batch_size: int):
        cfg, device = dec.config, dec.device
        self.dec, self.cfg, self.batch_size = dec, cfg, batch_size
        self.depth, self.budget = cfg.depth, cfg.budget
        self.topk = cfg.tree_topk if cfg.method == "tree" else 1
        self.chain_sampling = cfg.method == "chain" and cfg.temperature > 0
        self.synthetic = cfg.acceptance_profile is not None and cfg.method != "ar"
        self.head = dec.head
        sizes = cache_layout(dec.max_prompt_len, cfg.max_new_tokens, self.depth, self.topk, self.budget, self.head)
        self.num_refeed, self.prompt_width, self.tree_cols, self.num_verify, self.num_slots = sizes
        # A head's pair (feature at i, token at i + 1) sits at token i's slot and position, one before the token
        # an LM draft is fed to predict the same next token: a head's draft blocks start one slot earlier.
        self.shift = int(self.head)
        self.target_cache = SlotCache(_num_layers(dec.target), self.num_slots)
        self.draft_cache = SlotCache(_num_layers(dec.draft), self.num_slots) if dec.draft is not None else None
        self.shape = tree.TreeShape(self.topk, self.depth, self.budget) if self.depth else None
        # a chain whose every drafted node is verified: one child per node, no ranking, one block structure
        self.full_chain = self.depth > 0 and self.topk == 1 and self.budget == self.shape.num_pool
        self._allocate(batch_size, device)
        self.verify_phase = PhaseRunner(self._verify, self._state(), use_graph=dec.use_graphs, name="verify")
        self.draft_phase = (PhaseRunner(self._draft, [], use_graph=dec.use_graphs, name="draft")
                            if self.depth else None)

    def _allocate(self, batch: int, device: torch.device) -> None:
        """Allocate every static buffer the phases read or write (their addresses are baked into graphs)."""
        long = dict(dtype=torch.long, device=device)
        self.seq = torch.zeros(batch, self.num_slots, **long)  # token ids in slot layout
        self.pad = torch.zeros(batch, **long)  # slot of each row's first prompt token
        self.prompt_len = torch.zeros(batch, **long)
        self.length = torch.zeros(batch, **long)  # committed tokens (prompt + generated)
        self.all_done = torch.zeros((), dtype=torch.bool, device=device)
        self.num_drafts = torch.zeros((), **long)
        self.num_accepted = torch.zeros((), **long)
        self.per_pos = torch.zeros(self.depth, **long)
        self.per_rank = torch.zeros(self.topk if self.cfg.method == "tree" else 0, **long)
        self.row_drafts = torch.zeros(batch, **long)    # per row: drafts verified, accepted tokens, decode steps
        self.row_accepted = torch.zeros(batch, **long)
        self.row_steps = torch.zeros(batch, **long)
        rand_cols = (2 * self.depth + 1) if self.chain_sampling else self.num_verify
        drawn = self.cfg.temperature > 0 or self.synthetic  # synthetic decisions draw one uniform per node
        self.rand = torch.zeros(batch, rand_cols if drawn else 0, device=device)
        # Verify block written by the draft phase: root + budget nodes.
        self.block_token = torch.zeros(batch, self.budget, **long)
        self.block_depth = torch.zeros(batch, self.num_verify, **long)
        self.block_parent = torch.zeros(batch, self.num_verify, **long)
        self.block_rank = torch.zeros(batch, self.num_verify, **long)
        self.block_anc = torch.ones(batch, self.num_verify, self.num_verify, dtype=torch.bool, device=device)
        if self.chain_sampling:  # draft distributions of the chain, plus a zero row (see leviathan_accept)
            vocab = _vocab_size(self.dec.target)
            self.q_chain = torch.zeros(batch, self.depth + 1, vocab, device=device)
        if self.shape is not None:
            self.node_depth = self.shape.node_depth(device)
            self.node_rank = self.shape.node_rank(device)
        if self.synthetic:
            self._allocate_profile(device)
        if self.head:  # the target's features at the last verify's root and accepted path, and the root's position
            hidden = self.dec.target.config.get_text_config().hidden_size
            self.feat = torch.zeros(batch, self.depth + 1, hidden, dtype=self.dec.dtype, device=device)
            self.feat_start = torch.zeros(batch, **long)
        self.steps = torch.arange(max(self.num_refeed, self.num_verify, self.depth + 1, self.tree_cols),
                                  device=device)
        self.causal = torch.ones(self.prompt_width, self.prompt_width, dtype=torch.bool, device=device).tril()
        if self.full_chain:
            self._chain_block(batch, device)

    def _chain_block(self, batch: int, device: torch.device) -> None:
        """A full chain's verify block has the same structure at every step (node ``i`` at depth ``i + 1``, its
        parent the node before it, every rank 0): set once, from the tree functions on the chain's own pool, so
        :meth:`_draft_chain` writes only the tokens."""
        nodes = torch.arange(self.depth, device=device)
        path = torch.where(nodes[None, :] <= nodes[:, None], nodes[None, :], -1)  # [i, j]: node i's ancestor at j+1
        selected = nodes.expand(batch, self.depth)
        ancestors, depth, parent = tree.block_structure(path.expand(batch, -1, -1), self.node_depth, selected)
        self.block_anc.copy_(ancestors)
        self.block_depth.copy_(depth)
        self.block_parent.copy_(parent)
        self.block_rank[:, 1:] = self.node_rank[selected]

    def _allocate_profile(self, device: torch.device) -> None:
        """Synthetic-acceptance tables, built once so the phases stay static and free of host syncs.

        ``profile_logq`` ``(depth, k)``: draft log-score of the rank-``r`` child at depth ``d + 1`` (row ``d``),
        ``log q`` floored at 1e-9 so zero-probability ranks stay finite and rank last. ``profile_cdf``
        ``(depth + 1, k)``: row ``d`` = cumulative ``q`` over ranks for the children of a depth-``d`` node; the
        last row (deepest nodes, no children) is zeros, i.e. always "reject". Ranks past ``k`` are never in the
        tree, so dropping them leaves their mass to rejection, as it should.
        """
        q = torch.zeros(self.depth + 1, self.topk, dtype=torch.float32)
        for d, row in enumerate(self.cfg.acceptance_profile[: self.depth]):
            ranks = row[: self.topk]
            q[d, : len(ranks)] = torch.tensor(ranks, dtype=torch.float32)
        self.profile_logq = q[: self.depth].clamp(min=1e-9).log().to(device)
        self.profile_cdf = q.cumsum(dim=1).to(device)

    def release(self) -> None:
        """Drop the CUDA graphs and caches now (breaks the runner -> bound method -> workspace cycle)."""
        self.verify_phase = self.draft_phase = None
        self.target_cache = self.draft_cache = None

    def _state(self) -> list[torch.Tensor]:
        """Tensors the verify phase reads after writing (restored around graph warm-up)."""
        return [self.seq, self.length, self.all_done, self.num_drafts, self.num_accepted, self.per_pos,
                self.per_rank, self.row_drafts, self.row_accepted, self.row_steps]

    # ---------------------------------------------------------------- per call

    def prefill(self, prompts: list[list[int]]) -> None:
        """Load a batch's prompts into every row, fill both caches, commit the target's first token (eager, not
        graphed); every counter starts from zero."""
        for counter in (self.num_drafts, self.num_accepted, self.per_pos, self.per_rank):
            counter.zero_()
        self._load_rows(list(range(len(prompts))), prompts)  # the per-row counters restart with each row
        self.all_done.fill_(self.cfg.max_new_tokens <= 1)

    def refill(self, rows: list[int], prompts: list[list[int]]) -> None:
        """Continuous batching: load ``prompts`` into ``rows`` (any rows, one prefill for all of them), each first
        token committed as in :meth:`prefill`; the other rows keep their caches and state, the batch-wide counters
        keep counting (a finished row is frozen, so its sequence adds nothing after its last step), each refilled
        row's own restart."""
        self._load_rows(rows, prompts)

    def _load_rows(self, rows: list[int], prompts: list[list[int]]) -> None:
        """Prefill ``prompts`` into ``rows`` (eager), whose per-row counters restart. A fresh prompt attends to nothing but itself, so each prefill
        runs over scratch caches of the prompt slots alone, whose entries are then copied into the rows of the
        full caches (their other slots may hold a previous sequence's entries, which no mask reaches); in chunks
        of rows of at most :data:`~sdlaws.measure.layout.PREFILL_CHUNK_SLOTS` prompt slots, so that a large batch
        of long prompts needs no more activation memory than a chunk does. The first tokens' uniforms (T > 0) are
        drawn for all rows at once, so that the samples do not depend on the chunking (a CUDA generator's draws
        in pieces are not the pieces of one draw)."""
        uniforms = (torch.rand(len(prompts), generator=self.dec.generator, device=self.seq.device)
                    if self.cfg.temperature else None)
        done = 0
        for chunk in _prefill_chunks(rows, prompts, self._used_slots):
            chunk_rows, chunk_prompts = zip(*chunk)
            u = None if uniforms is None else uniforms[done:done + len(chunk)]
            done += len(chunk)
            index = torch.tensor(chunk_rows, dtype=torch.long, device=self.seq.device)
            for counter in (self.row_drafts, self.row_accepted, self.row_steps):
                counter[index] = 0
            used = self._used_slots(chunk_prompts)
            scratch = [None if full is None else SlotCache(len(full.layers), used)
                       for full in (self.target_cache, self.draft_cache)]
            self._load(list(chunk_prompts), index, *scratch, u)
            for full, part in zip((self.target_cache, self.draft_cache), scratch):
                if full is not None:
                    full.write_rows(part, index, self.prompt_width - used, batch=self.batch_size)

    def _used_slots(self, prompts) -> int:
        """Slots a prefill of ``prompts`` runs over: the longest prompt, rounded up to the slot alignment."""
        return min(self.prompt_width, round_up(max(map(len, prompts)), SLOT_ALIGN))

    def _load(self, prompts: list[list[int]], rows: torch.Tensor, target_cache: SlotCache,
              draft_cache: SlotCache | None, u: torch.Tensor | None) -> None:
        """Prefill ``prompts`` into ``rows`` (an index tensor) through scratch caches over those rows and the prompt
        slots alone: the row state, both caches, the first new token (sampled with the uniforms ``u``, one per
        prompt, at T > 0) (and a head's first features).

        Prompts end at slot ``W - 1``; only the last ``used`` slots (the longest of these prompts, rounded up: the
        scratch caches' ``num_slots``) go through the forward pass, slot ``s`` of the workspace at ``s - offset``.
        """
        width, device = self.prompt_width, self.seq.device
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long)
        used = target_cache.num_slots
        offset = width - used
        ids = torch.zeros(len(prompts), used, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, used - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        ids = ids.to(device)
        seq = torch.zeros(len(prompts), self.seq.shape[1], dtype=torch.long, device=device)
        seq[:, width - used:width] = ids
        self.prompt_len[rows] = lengths.to(device)
        self.length[rows] = lengths.to(device)
        pad = (width - lengths).to(device)
        self.pad[rows] = pad
        slots = torch.arange(width - used, width, device=device).expand(len(prompts), used)
        positions = (slots - pad[:, None]).clamp(min=0)
        mask = block_mask(pad - offset, pad - offset, slots[:, 0] - offset, self._padded_causal(slots, pad),
                          target_cache.num_slots, self.dec.dtype)
        logits, features = self._target_forward(target_cache, ids, positions, slots - offset, mask, keep_last=1)
        if draft_cache is not None and not self.head:
            _forward(self.dec.draft, draft_cache, ids, positions, slots - offset, mask, keep_last=1)
        seq[:, width] = sampling.choose(logits[:, -1], self.cfg.temperature, u)
        self.seq[rows] = seq
        if self.head:
            self._prefill_head(draft_cache, rows, features, positions, slots, mask, offset)
        self.length[rows] += 1

    def _prefill_head(self, cache: SlotCache, rows: torch.Tensor, features: torch.Tensor,
                      positions: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, offset: int) -> None:
        """Fill the head's cache (over ``rows``, slot ``s`` at ``s - offset``) with the prompts' pairs (target
        feature at ``i``, token at ``i + 1``; the last pairs the prompt's last feature with the first new token),
        and keep that last feature ``(b, h)`` for the first draft phase (before ``length`` counts the new token)."""
        tokens = self.seq[rows].gather(1, slots + 1)
        _forward_head(self.dec.draft, cache, tokens, features, positions, slots - offset, mask)
        self.feat[rows, 0] = features[:, -1]
        self.feat_start[rows] = self.length[rows] - 1

    def draw_uniforms(self) -> None:
        """Fresh uniforms for this step's sampling (none at temperature 0)."""
        if self.rand.numel():
            torch.rand(self.rand.shape, generator=self.dec.generator, out=self.rand)

    def _finished(self) -> torch.Tensor:
        """``(B,)`` bool: whether each row has its ``max_new_tokens``."""
        return (self.length - self.prompt_len) >= self.cfg.max_new_tokens

    def done_rows(self) -> list[bool]:
        """Whether each row has its ``max_new_tokens`` (one host sync)."""
        return self._finished().tolist()

    def sequences(self, rows: list[int]) -> list[_Sequence]:
        """The ``max_new_tokens`` generated tokens (from slot W in every row) and the counters of ``rows``."""
        index = torch.tensor(rows, dtype=torch.long, device=self.seq.device)
        start = self.prompt_width
        tokens = self.seq[index, start:start + self.cfg.max_new_tokens].tolist()
        counts = torch.stack([self.row_drafts, self.row_accepted, self.row_steps], dim=1)[index].tolist()
        return [_Sequence(t, *c) for t, c in zip(tokens, counts)]

    def read_counters(self, stats: DecodeStats) -> None:
        """Copy the batch-wide device counters into ``stats``."""
        stats.num_drafts = int(self.num_drafts)
        stats.num_draft_tokens = stats.num_drafts * self.budget
        stats.num_accepted_tokens = int(self.num_accepted)
        stats.num_accepted_per_pos = self.per_pos.tolist()
        stats.num_accepted_per_rank = self.per_rank.tolist()

    # ---------------------------------------------------------------- draft phase

    def _draft(self) -> None:
        """Draft a tree (a chain when k = 1) for every row; write the verify block buffers."""
        if self.full_chain:
            return self._draft_chain()
        batch, k, depth, shape = self.batch_size, self.topk, self.depth, self.shape
        base = self.pad + self.length - self.shift  # (B,) slot of the first drafted node
        frontier_logits, frontier_feat = self._draft_root(base)  # (B, 1, V): distribution after the last token
        pool_token = torch.zeros(batch, shape.num_pool, dtype=torch.long, device=base.device)
        pool_score = torch.zeros(batch, shape.num_pool, device=base.device)
        pool_path = torch.full((batch, shape.num_pool, depth), -1, dtype=torch.long, device=base.device)
        child_token, child_logp = self._children(frontier_logits, 0)  # (B, 1, k)
        pool_token[:, :k] = child_token[:, 0]
        pool_score[:, :k] = child_logp[:, 0]
        pool_path[:, :k, 0] = self.steps[:k]
        frontier = self.steps[:k].expand(batch, k)
        tree_cols = self.tree_cols
        frontier_anc = torch.zeros(batch, k, tree_cols, dtype=torch.bool, device=base.device)
        for level in range(1, depth):
            cols = (level - 1) * k + self.steps[:k]  # tree-block column of each frontier node
            frontier_anc = frontier_anc | (self.steps[:tree_cols] == cols[:, None])  # each node also sees itself
            slots = base[:, None] + cols
            positions = (self.length - 1 - self.shift + level)[:, None].expand(batch, k)
            mask = block_mask(self.pad, base, base, frontier_anc, self.num_slots, self.dec.dtype)
            logits, feat = self._draft_forward(pool_token.gather(1, frontier), frontier_feat, positions, slots,
                                               mask)  # (B, k, V)
            child_token, child_logp = self._children(logits, level)
            frontier, parent = tree.grow(pool_token, pool_score, pool_path, shape, level, frontier, child_token,
                                         child_logp)
            frontier_anc = frontier_anc.gather(1, parent[:, :, None].expand(batch, k, tree_cols))
            if feat is not None:  # a head drafts each node's children from the node's predicted feature
                frontier_feat = feat.gather(1, parent[:, :, None].expand_as(feat))
        selected = tree.select(pool_score, self.budget)
        ancestors, block_depth, parent = tree.block_structure(pool_path, self.node_depth, selected)
        self.block_token.copy_(pool_token.gather(1, selected))
        self.block_anc.copy_(ancestors)
        self.block_depth.copy_(block_depth)
        self.block_parent.copy_(parent)
        self.block_rank[:, 1:] = self.node_rank[selected]

    def _draft_chain(self) -> None:
        """A full chain's draft: what :meth:`_draft` computes for ``k = 1`` with every node verified (tested
        equal), without the pool, scores and selection of a tree, and with the draft mask grown by one slot per
        level rather than built again: per drafted token, a handful of kernels instead of ~20 (each a launch and a
        gap inside the draft phase's graph)."""
        base = self.pad + self.length - self.shift  # (B,) slot of the first drafted node
        logits, feat = self._draft_root(base)
        self.block_token[:, :1] = self._children(logits, 0)[0][:, 0]
        first = (self.steps[:self.tree_cols] == 0)[None]  # (1, cols): the first node sees itself
        mask = block_mask(self.pad, base, base, first, self.num_slots, self.dec.dtype)  # (B, 1, 1, S)
        first_slot, first_position = base[:, None], (self.length - (1 + self.shift))[:, None]  # (B, 1) each
        for level in range(1, self.depth):
            slots = first_slot + (level - 1)
            if level > 1:  # the node drafted at the previous level is now an ancestor too
                mask.scatter_(3, slots[:, None, None], 0.0)
            logits, feat = self._draft_forward(self.block_token[:, level - 1:level], feat, first_position + level,
                                               slots, mask)
            self.block_token[:, level:level + 1] = self._children(logits, level)[0][:, 0]

    def _draft_root(self, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draft logits ``(B, 1, V)`` after the last committed token, and (heads) the predicted feature there
        ``(B, 1, h)``, which the root's children are drafted from (None for an LM draft)."""
        if self.head:
            return self._head_refeed()
        return self._draft_refeed(base)[:, None], None

    def _draft_forward(self, tokens: torch.Tensor, features: torch.Tensor | None, positions: torch.Tensor,
                       slots: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draft forward on frontier ``tokens`` ``(B, k)``: logits ``(B, k, V)`` and (heads) predicted features
        ``(B, k, h)``; a head pairs each token with its parent's predicted feature, ``features`` ``(B, k or 1, h)``."""
        if not self.head:
            return _forward(self.dec.draft, self.draft_cache, tokens, positions, slots, mask), None
        features = features.expand(*tokens.shape, features.shape[-1])
        hidden = _forward_head(self.dec.draft, self.draft_cache, tokens, features, positions, slots, mask)
        features, logits = self.dec.draft.predict(hidden)
        return logits, features

    def _head_refeed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Head forward on the pairs of the last verify's root and accepted path (the target's features of
        ``feat`` with the tokens after them); logits ``(B, 1, V)`` and predicted feature ``(B, 1, h)`` of the last
        pair, the bonus token's.

        The block always spans ``depth + 1`` pairs; those past a row's accepted path are junk and land at slots
        that this step's tree overwrites or that no query attends to.
        """
        n = self.num_refeed
        start = self.pad + self.feat_start
        slots = start[:, None] + self.steps[:n]
        positions = self.feat_start[:, None] + self.steps[:n]
        mask = block_mask(self.pad, start, start, self.causal[:n, :n], self.num_slots, self.dec.dtype)
        hidden = _forward_head(self.dec.draft, self.draft_cache, self.seq.gather(1, slots + 1), self.feat, positions,
                               slots, mask)  # (B, n, h)
        last = (self.length - 2 - self.feat_start).clamp(min=0)  # accepted tokens of the last step (frozen: -1)
        hidden = hidden.gather(1, last[:, None, None].expand(-1, 1, hidden.shape[2]))
        feature, logits = self.dec.draft.predict(hidden)
        return logits, feature

    def _draft_refeed(self, base: torch.Tensor) -> torch.Tensor:
        """Draft forward on the last ``num_refeed`` committed tokens; returns the last position's logits."""
        start = base - self.num_refeed
        slots = start[:, None] + self.steps[: self.num_refeed]
        positions = (slots - self.pad[:, None]).clamp(min=0)
        mask = block_mask(self.pad, start, start, self._padded_causal(slots, self.pad), self.num_slots,
                          self.dec.dtype)
        return _forward(self.dec.draft, self.draft_cache, self.seq.gather(1, slots), positions, slots, mask,
                        keep_last=1)[:, -1]

    def _padded_causal(self, slots: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(b, n, n)`` causal block structure over consecutive ``slots`` ``(b, n)`` of rows whose prompts start
        at slot ``pad`` ``(b,)``, that hides pad slots.

        A block may start left of a short prompt (prefill; the draft's re-read): real tokens must not see the
        pads, and pad queries see only themselves (their output is unused; this keeps every softmax finite).
        """
        n = slots.shape[1]
        causal = self.causal[:n, :n]
        real = slots[:, None, :] >= pad[:, None, None]
        return (causal & real) | torch.eye(n, dtype=torch.bool, device=slots.device)

    def _children(self, logits: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Children of each node from its draft logits ``(B, f, V)``: ``(B, f, k)`` tokens and log-probs.

        Top-k by draft probability, except for a chain at temperature > 0, whose single child is sampled from
        the draft (its distribution is kept for :func:`sampling.leviathan_accept`). With an acceptance profile the
        tokens are the draft's real top-k but their log-probs are the profile's (``profile_logq[level]``), so
        the tree grown and selected from them is EAGLE-2's tree for the profile, the same at every step.
        """
        if self.chain_sampling:
            q = sampling.probs(logits[:, 0], self.cfg.temperature)  # (B, V)
            self.q_chain[:, level] = q
            token = sampling.sample(q, self.rand[:, level])
            return token[:, None, None], q.gather(1, token[:, None]).log()[:, None]
        if self.full_chain:
            # the scores rank nothing (one child per node, and tree.select takes the whole pool), so the draft's
            # argmax is enough, without a float32 log-softmax
            token = sampling.argmax(logits).unsqueeze(-1)
            return token, torch.zeros(token.shape, device=token.device)
        top = sampling.log_probs(logits, self.cfg.temperature).topk(self.topk, dim=-1)
        if self.synthetic:
            return top.indices, self.profile_logq[level].expand_as(top.values)
        return top.indices, top.values

    # ---------------------------------------------------------------- verify phase

    def _verify(self) -> None:
        """Target forward on root + drafted block, acceptance, commit, counters."""
        if self.depth == 0:
            return self._verify_ar()
        self._verify_block()

    def _verify_ar(self) -> None:
        """AR's step: what :meth:`_verify_block` computes for an empty block (tested equal), without the walk,
        the accepted path and the block commit: one target forward on each row's last token, its choice appended
        to the active rows (a dozen kernels fewer per step, each a launch and a gap inside the verify graph)."""
        root_slot = self.pad + self.length - 1  # the last committed token is not yet in the target cache
        slots = root_slot[:, None]  # (B, 1)
        mask = block_mask(self.pad, root_slot, root_slot, self.block_anc, self.num_slots, self.dec.dtype)
        logits, _ = self._target_forward(self.target_cache, self.seq.gather(1, slots), (self.length - 1)[:, None],
                                         slots, mask)  # (B, 1, V)
        u = self.rand[:, :1] if self.cfg.temperature > 0 else None
        token = sampling.choose(logits, self.cfg.temperature, u)  # (B, 1)
        active = ~self._finished()  # (B,) rows still generating
        self.seq.scatter_(1, slots + 1, torch.where(active[:, None], token, self.seq.gather(1, slots + 1)))
        self.length += active
        self.row_steps += active
        self.all_done.copy_(self._finished().all())

    def _verify_block(self) -> None:
        """Target forward on root + drafted block, acceptance, commit, counters (speculative steps)."""
        batch, depth = self.batch_size, self.depth
        root_slot = self.pad + self.length - 1  # the last committed token is not yet in the target cache
        root = self.seq.gather(1, root_slot[:, None])
        block = torch.cat([root, self.block_token], dim=1)  # (B, 1 + budget)
        slots = root_slot[:, None] + self.steps[: self.num_verify]
        positions = (self.length - 1)[:, None] + self.block_depth
        mask = block_mask(self.pad, root_slot, root_slot, self.block_anc, self.num_slots, self.dec.dtype)
        logits, features = self._target_forward(self.target_cache, block, positions, slots,
                                                mask)  # (B, n, V), heads: (B, n, h)
        active = ~self._finished()  # (B,) rows still generating
        if self.chain_sampling:
            p = sampling.probs(logits, self.cfg.temperature)
            accepted, bonus = sampling.leviathan_accept(p, self.q_chain, self.block_token, self.rand[:, depth:])
            path = self.steps[: depth + 1].expand(batch, depth + 1)
        else:
            u = self.rand[:, : self.num_verify] if self.cfg.temperature > 0 else None
            choice = sampling.choose(logits, self.cfg.temperature, u)  # (B, n) target token after each node
            followed = self._synthetic_choice(block) if self.synthetic else choice
            taken = tree.walk(followed, block, self.block_depth, self.block_parent, depth)
            path = tree.accepted_path(taken, self.block_depth, depth)
            accepted = taken.sum(dim=1) - 1
            bonus = choice.gather(1, path.gather(1, accepted[:, None])).squeeze(1)  # the target's own token
            if self.per_rank.numel():
                counted = taken & active[:, None] & (self.block_depth > 0)  # accepted draft nodes of live rows
                self.per_rank.scatter_add_(0, self.block_rank.flatten(), counted.flatten().long())
        accepted = accepted * active
        if self.head:  # the target's features of the root and the accepted path: the head's next pairs
            self.feat.copy_(features.gather(1, path[:, :, None].expand(-1, -1, features.shape[2])))
            self.feat_start.copy_(self.length - 1)
        self._commit(block, path, accepted, bonus, active, root_slot)

    def _target_forward(self, cache: SlotCache, ids: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                        mask: torch.Tensor, keep_last: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target logits ``(b, n', V)`` (``n' = keep_last`` or ``n``) through ``cache`` (the target's, or a
        prefill's scratch cache), and with a head draft also the target's features ``(b, n, h)`` (the LM head's input)
        at every position (None otherwise)."""
        if not self.head:
            return _forward(self.dec.target, cache, ids, positions, slots, mask, keep_last), None
        cache.write_slots = slots
        features = target_features(self.dec.target, cache, input_ids=ids, position_ids=positions,
                                   attention_mask=mask, use_cache=True)
        # contiguous: see FastDecoderLM.forward (one LM-head GEMM, not one weight read per row)
        kept = features[:, -keep_last:].contiguous() if keep_last else features
        return self.dec.target.get_output_embeddings()(kept), features

    def _synthetic_choice(self, block: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` token the acceptance profile makes the target pick after each block node; -1 = reject.

        Node ``j`` at depth ``d`` picks sibling rank ``r`` with probability ``q[d][r]`` (its uniform
        ``rand[:, j]`` against the cumulative row; none with the rest of the mass, or at the deepest level), and
        its choice is the token of its rank-``r`` child when the verify block holds that child (a child the
        budget left out cannot be accepted). Along a path the uniforms are independent, so depth ``d`` is
        accepted with probability ``q[d-1][r]`` given the path so far.
        """
        n = self.num_verify
        rank = (self.rand[:, :n, None] >= self.profile_cdf[self.block_depth]).sum(dim=2)  # (B, n); k = none
        child = ((self.block_parent[:, None, :] == self.steps[:n, None])  # [b, j, i]: node i's parent is j,
                 & (self.block_rank[:, None, :] == rank[:, :, None])  # i has the picked rank,
                 & (self.block_depth[:, None, :] == self.block_depth[:, :, None] + 1))  # and is not the root
        index = child.long().argmax(dim=2)  # (B, n) the unique such child, if any
        return torch.where(child.any(dim=2), block.gather(1, index), -1)

    def _commit(self, block: torch.Tensor, path: torch.Tensor, accepted: torch.Tensor, bonus: torch.Tensor,
                active: torch.Tensor, root_slot: torch.Tensor) -> None:
        """Append accepted path + bonus to each active row, compact the target cache, update counters."""
        depth = self.depth
        offsets = self.steps[: depth + 1]  # (d+1,) position after the root
        tokens = torch.cat([block.gather(1, path[:, 1:]), bonus[:, None]], dim=1)  # (B, d+1)
        tokens = torch.where(offsets == accepted[:, None], bonus[:, None], tokens)
        write = active[:, None] & (offsets <= accepted[:, None])
        slots = (root_slot + 1)[:, None] + offsets
        self.seq.scatter_(1, slots, torch.where(write, tokens, self.seq.gather(1, slots)))
        if self.topk > 1:  # tree nodes sit at block positions; move the accepted path to consecutive slots
            dst = (root_slot + 1)[:, None] + offsets[:depth]  # consecutive slots after the root
            src = torch.where(write[:, 1:], root_slot[:, None] + path[:, 1:], dst)  # accepted depths 1..a move
            self.target_cache.move(src, dst)
        self.length += (accepted + 1) * active
        self.num_drafts += active.sum() if depth else 0
        self.row_drafts += active if depth else 0
        self.row_accepted += accepted
        self.row_steps += active
        self.num_accepted += accepted.sum()
        self.per_pos += (accepted[:, None] > offsets[:depth]).sum(dim=0)
        self.all_done.copy_(self._finished().all())
