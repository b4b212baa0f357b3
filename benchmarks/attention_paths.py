"""Candidate implementations of the fast path's attention call over the slot KV cache, timed at the engine's shapes.

    python3 benchmarks/attention_paths.py --out $OUT/attention.csv                 # one H200: about 1.5 minutes
    python3 benchmarks/attention_paths.py --cases 1x1x384,64x1x384 --out a.csv     # a subset (batch x n x S)
    python3 benchmarks/attention_paths.py --device cpu --out /tmp/attention.csv    # CPU smoke run, seconds
    python3 benchmarks/attention_paths.py --summary measurements/h200/attention.csv  # the summary table of a run

The call (``FastDecoderLM._attention`` in :mod:`sdlaws.measure.fastpath`) is
``F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)`` with the query heads of each KV head folded into
the query axis: ``q`` ``(B, kv_heads, groups * n, D)``, ``keys``/``values`` ``(B, kv_heads, S, D)`` over every
allocated slot, ``mask`` ``(B, 1, groups * n, S)`` additive float (:func:`sdlaws.measure.kvcache.block_mask`,
expanded over the groups as ``FastDecoderLM.features`` does). Shapes are Llama-3.1-8B's attention: 32 query heads,
8 KV heads, head size 128.

A case is ``batch x n x S``: ``n`` queries per row (1 a decode, 5 a gamma-4 chain's verification with causal
order among them, 16 a tree's with a binary tree's ancestor-or-self order) over ``S`` slots. A row's live slots
(those its queries may attend, its committed prefix and its ``n`` block slots) form one range: at batch 1,
``S - n - 16`` slots from slot 0; at larger batches the live lengths are spread evenly over ``[S/2, S - n]`` and
every row's range ends at slot ``S - n`` (prompts are left-padded to end at one slot, so shorter rows start
later). Slots outside a row's range hold values of 8 (a real cache holds stale entries there), so an
implementation that attends to them is off by far more than rounding.

Implementations, each captured in a CUDA graph and replayed (median of ``--repeats`` timings with CUDA events, each
of ``--replays`` replays, fewer where those would take over ``--timing-ms``, which bounds the run's length; on CPU
timed eagerly with ``perf_counter``):

- ``sdpa-default``: the engine's call as it is (PyTorch picks the backend);
- ``sdpa-efficient``, ``sdpa-cudnn``, ``sdpa-math``: the same call forced to one backend (skipped, with the
  reason PyTorch gives, where the backend refuses the inputs);
- ``sdpa-bool-mask``: a boolean mask instead of the additive one;
- ``sdpa-live-slice``: the same call over the first ``L`` slots only (``L`` = the largest live range end): what
  reading only the live positions would give; a bound: a captured graph has static shapes, so the engine would
  need a kernel that takes ``L`` at run time;
- ``flex``: ``torch.compile(flex_attention)`` on the unfolded ``(B, heads, n, D)`` query with ``enable_gqa=True``
  and a ``mask_mod`` that reads a boolean ``(B, n, S)`` tensor, its block mask built once per case outside the
  timed graph (an engine's mask changes every step, so it would rebuild the block mask once per step, shared by
  the layers: its eager build time is in the row's note); a compile or capture failure is recorded, not fatal;
- ``triton``: the fast path's own kernel on CUDA (:func:`sdlaws.measure.kernels.attention`: reads only each row's
  live slot range, shares the cache's blocks among programs where the batch has few KV heads), its live bounds
  built once per case outside the timed graph as the engine builds them once per forward (their eager build time
  is in the row's note; runs at git ``d1462063c8c2`` and before timed them inside each call);
- ``flash-nomask``: reference only, not usable by the engine: SDPA's flash backend over the live prefix ``L``
  with no mask at all (GQA through ``enable_gqa``), so it also attends to pads.

Each implementation's output (the graph's, after the timed replays) is compared with a float32 reference of the
masked attention on the same inputs (``flash-nomask``: of the unmasked attention it computes); an error above the
dtype's tolerance marks the row ``WRONG`` and the command exits 1 after writing its table.

Columns: the case, the implementation, microseconds per call, the max abs error, the KV bytes live
(``sum over rows of live x kv_heads x D x 2 (keys, values) x dtype size``) and over all slots, and the percent of
the copy-bandwidth floor, the time to read those bytes at the device-to-device copy bandwidth measured in the same
run (:func:`sdlaws.measure.hwbench.copy_bytes_per_s`), for the live bytes and for all slots'. The CSV goes to
``--out``, a markdown table (with a provenance line) to stdout. Cases whose working set would exceed 40 GB are
skipped.

The SDPA implementations are all timed before any ``flex`` one, so that a fault in a compiled kernel cannot take
the other rows with it.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from sdlaws.errors import SdlawsError
from sdlaws.measure import hwbench
from sdlaws.measure.kvcache import block_mask
from sdlaws.measure.models import canonical_dtype, device_name, resolve_device
from sdlaws.provenance import describe, provenance

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128  # Llama-3.1-8B
GRID = [(b, n, s) for s in (384, 2048) for b in (1, 8, 64, 256) for n in (1, 5, 16)]
#: The CPU smoke run's cases: small enough for a unit test.
SMOKE = [(1, 1, 128), (4, 5, 128), (2, 16, 128)]
MAX_BYTES = 40e9
DEAD_VALUE = 8.0  # values in slots no query may attend: a mask ignored shows as an error of ~DEAD_VALUE x leak
TOLERANCE = {"float32": 1e-3, "bfloat16": 2e-2, "float16": 1e-2}
COLUMNS = ["batch", "n", "slots", "live_mean", "live_min", "live_max", "slice_len", "impl", "status", "us",
           "max_abs_err", "tolerance", "live_kv_bytes", "all_kv_bytes", "floor_live_us", "floor_pct_live",
           "floor_pct_all", "copy_bytes_per_s", "dtype", "device", "replays", "repeats", "note", "gpu_name",
           "torch_version", "git_sha", "timestamp_utc"]


# ----------------------------------------------------------------------------------------------------------------
# Cases and their inputs


def parse_cases(text: str) -> list[tuple[int, int, int]]:
    """``BxNxS,BxNxS,...`` (or ``all``: the full grid); a malformed list is one argparse error line (exit 2)."""
    if text.strip() == "all":
        return list(GRID)
    cases = []
    for part in text.split(","):
        try:
            batch, n, slots = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not BATCHxNxSLOTS (e.g. 64x5x2048)") from None
        if min(batch, n, slots) < 1 or slots < 2 * (n + 16):
            raise argparse.ArgumentTypeError(f"{part!r}: batch and n are positive and slots at least 2 (n + 16)")
        cases.append((batch, n, slots))
    return cases


def live_lengths(batch: int, n: int, slots: int) -> list[int]:
    """Live slots per row: ``S - n - 16`` at batch 1; spread evenly over ``[S/2, S - n]`` otherwise."""
    if batch == 1:
        return [slots - n - 16]
    lo, hi = slots // 2, slots - n
    return [round(lo + (hi - lo) * i / (batch - 1)) for i in range(batch)]


def ancestors(n: int) -> torch.Tensor:
    """``(n, n)`` bool: which block slot each query sees. A chain's causal order for ``n <= 8``; above, a binary
    tree (node ``i``'s parent is ``(i - 1) // 2``), ancestor-or-self."""
    if n <= 8:
        return torch.ones(n, n, dtype=torch.bool).tril()
    seen = torch.eye(n, dtype=torch.bool)
    for i in range(1, n):
        seen[i] |= seen[(i - 1) // 2]
    return seen


@dataclass
class Inputs:
    """One case's tensors on the device."""

    batch: int
    n: int
    slots: int
    live: list[int]
    slice_len: int           # largest live range end: slots [0, slice_len) hold every live one
    q_fold: torch.Tensor     # (B, kv_heads, groups * n, D), the engine's folded query
    keys: torch.Tensor       # (B, kv_heads, S, D)
    values: torch.Tensor
    mask: torch.Tensor       # (B, 1, groups * n, S) additive, as the engine passes it to SDPA
    token_mask: torch.Tensor  # (B, 1, n, S) additive, as the engine builds it (the Triton kernel reads it)
    bool_mask: torch.Tensor  # (B, 1, groups * n, S) True = attend
    allowed: torch.Tensor    # (B, n, S) True = attend (flex's mask_mod reads it)

    @property
    def q_heads(self) -> torch.Tensor:
        """``(B, heads, n, D)``: the unfolded query (a view of the folded one)."""
        return self.q_fold.view(self.batch, HEADS, self.n, HEAD_DIM)


def working_set_bytes(batch: int, n: int, slots: int, esize: int) -> float:
    """Rough peak bytes of a case: the cache, its float32 copy for the reference, and a few ``(B, heads, n, S)``
    float32 score tensors (the reference's and the math backend's)."""
    kv = 2.0 * batch * KV_HEADS * slots * HEAD_DIM
    return kv * (esize + 4) + 4.0 * batch * HEADS * n * slots * 4


def make_inputs(batch: int, n: int, slots: int, dtype: torch.dtype, device: str) -> Inputs:
    """The case's query, cache and masks (seeded: the same case gets the same tensors)."""
    gen = torch.Generator(device=device).manual_seed(1000 * batch + 10 * n + slots)
    live = live_lengths(batch, n, slots)
    end = live[0] if batch == 1 else slots - n  # every row's live range ends here
    start = torch.tensor([end - x for x in live], device=device)
    prefix_end = torch.full((batch,), end - n, device=device)
    mask = block_mask(start, prefix_end, prefix_end, ancestors(n).to(device), slots, dtype)  # (B, 1, n, S)
    groups = HEADS // KV_HEADS
    # as FastDecoderLM.features: the same mask for each of a KV head's query groups, materialised contiguous
    mask_fold = mask.unsqueeze(2).expand(batch, 1, groups, n, slots).reshape(batch, 1, groups * n, slots)
    allowed = mask[:, 0] == 0
    kv = torch.randn((2, batch, KV_HEADS, slots, HEAD_DIM), generator=gen, device=device, dtype=torch.float32)
    live_slot = allowed.any(dim=1)  # (B, S): slots some query of the row attends
    kv[1].masked_fill_(~live_slot[:, None, :, None], DEAD_VALUE)
    kv = kv.to(dtype)  # one (2, B, kv_heads, S, D) tensor, keys and values adjacent as in the engine's stack
    q = torch.randn((batch, KV_HEADS, groups * n, HEAD_DIM), generator=gen, device=device, dtype=torch.float32)
    return Inputs(batch, n, slots, live, end, q.to(dtype), kv[0], kv[1], mask_fold, mask, mask_fold == 0, allowed)


def reference(x: Inputs, length: int | None = None, masked: bool = True) -> torch.Tensor:
    """Float32 attention ``(B, heads, n, D)`` over the first ``length`` slots (all by default), masked by
    ``x.allowed`` (or not)."""
    length = length or x.slots
    groups = HEADS // KV_HEADS
    keys, values = x.keys[:, :, :length].float(), x.values[:, :, :length].float()
    scores = (x.q_fold.float() @ keys.transpose(-1, -2)) / math.sqrt(HEAD_DIM)  # (B, kv, groups * n, L)
    if masked:
        scores = scores.view(x.batch, KV_HEADS, groups, x.n, length)
        scores = scores.masked_fill(~x.allowed[:, None, None, :, :length], float("-inf"))
        scores = scores.view(x.batch, KV_HEADS, groups * x.n, length)
    out = torch.softmax(scores, dim=-1) @ values
    return out.view(x.batch, HEADS, x.n, HEAD_DIM)


# ----------------------------------------------------------------------------------------------------------------
# Implementations: name -> build(inputs, device) -> (fn returning (B, heads, n, D) or the folded output, note,
# reference kind); a build raises Skip where the implementation does not apply.


class Skip(Exception):
    """The implementation refuses these inputs (the message says why)."""


def _unfold(x: Inputs, out: torch.Tensor) -> torch.Tensor:
    return out.view(x.batch, HEADS, x.n, HEAD_DIM)


def _sdpa(backend=None, *, bool_mask=False, live_slice=False):
    def build(x: Inputs, device: str):
        length = x.slice_len if live_slice else x.slots
        keys, values = x.keys[:, :, :length], x.values[:, :, :length]
        mask = (x.bool_mask if bool_mask else x.mask)[..., :length]

        def call():
            return F.scaled_dot_product_attention(x.q_fold, keys, values, attn_mask=mask)

        if backend is None:
            return call, (f"{length} of {x.slots} slots" if live_slice else ""), "masked"
        from torch.nn.attention import SDPBackend, sdpa_kernel

        chosen = getattr(SDPBackend, backend)

        def forced():
            with sdpa_kernel(chosen):
                return call()
        return forced, "", "masked"
    return build


def _flash_nomask(x: Inputs, device: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    keys, values = x.keys[:, :, :x.slice_len], x.values[:, :, :x.slice_len]

    def call():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(x.q_heads, keys, values, enable_gqa=True)
    return call, f"no mask over {x.slice_len} slots (pads attended): a bound, not the engine's function", "unmasked"


def _triton(x: Inputs, device: str):
    try:
        from sdlaws.measure import kernels
    except ImportError as exc:
        raise Skip(f"no triton ({exc})") from None
    import triton

    if not device.startswith("cuda") and not triton.knobs.runtime.interpret:
        raise Skip("on CPU it runs in Triton's interpreter only: set TRITON_INTERPRET=1 before the run")
    # the rows' live bounds once per case, not timed: the engine computes them once per forward for all its layers
    bounds_s = statistics.median(_wall_s(lambda: kernels.live_bounds(x.token_mask), device) for _ in range(3))
    bounds = kernels.live_bounds(x.token_mask)

    def call():
        out = kernels.attention(x.q_fold, x.keys, x.values, x.token_mask, x.n, bounds=bounds)  # (B, n, heads * D)
        return out.view(x.batch, x.n, HEADS, HEAD_DIM).transpose(1, 2)
    cfg = kernels.attention_config(x.batch * KV_HEADS, x.q_fold.shape[2], x.slots, torch.device(device))
    return call, (f"{cfg['tiles']} row tile(s) x {cfg['splits']} share(s) of the slot blocks of {cfg['block_s']} per "
                  "KV head; live bounds built once "
                  f"per case, not timed ({bounds_s * 1e6:.0f} us eager)"), "masked"


_compiled_flex = None


def _flex(x: Inputs, device: str):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    global _compiled_flex
    allowed = x.allowed

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed[b, q_idx, kv_idx]

    def build_mask():
        return create_block_mask(mask_mod, x.batch, None, x.n, x.slots, device=device)

    build_s = statistics.median(_wall_s(build_mask, device) for _ in range(3))
    mask = build_mask()
    if device.startswith("cuda"):
        if _compiled_flex is None:
            # one compiled entry per shape class (automatic dynamic shapes); the grid has more than torch's 8
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
            if hasattr(dynamo, "accumulated_recompile_limit"):
                dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 256)
            _compiled_flex = torch.compile(flex_attention)
        fn, how = _compiled_flex, "compiled"
    else:
        fn, how = flex_attention, "eager (not compiled) on CPU"

    def call():
        return fn(x.q_heads, x.keys, x.values, block_mask=mask, enable_gqa=True)
    note = (f"{how}; block mask built once per case, not timed (an engine rebuilds it once per step, shared "
            f"by the layers: {build_s * 1e6:.0f} us eager)")
    return call, note, "masked"


IMPLS: dict[str, Callable] = {
    "sdpa-default": _sdpa(),
    "sdpa-efficient": _sdpa("EFFICIENT_ATTENTION"),
    "sdpa-cudnn": _sdpa("CUDNN_ATTENTION"),
    "sdpa-math": _sdpa("MATH"),
    "sdpa-bool-mask": _sdpa(bool_mask=True),
    "sdpa-live-slice": _sdpa(live_slice=True),
    "flash-nomask": _flash_nomask,
    "triton": _triton,
    "flex": _flex,
}
#: Timed in a second pass over the cases (a fault in a compiled kernel cannot take the SDPA rows with it).
LATE = ("flex",)


# ----------------------------------------------------------------------------------------------------------------
# Timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _wall_s(fn: Callable, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_call(fn: Callable[[], torch.Tensor], device: str, *, replays: int, repeats: int, budget_s: float):
    """``(microseconds per call, calls per timing, output, keep-alive)``: on CUDA, ``fn`` captured in a CUDA graph
    (after warm-up calls on a side stream), then the median over ``repeats`` timings of back-to-back replays
    timed with CUDA events; on CPU, eager calls timed with ``perf_counter``. A timing is ``replays`` calls, fewer
    (at least 10) where they would take longer than ``budget_s``. The output is the last call's."""
    if not device.startswith("cuda"):
        start = time.perf_counter()
        out = fn()
        calls = max(1, min(replays, int(budget_s / max(time.perf_counter() - start, 1e-9))))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                out = fn()
            times.append((time.perf_counter() - start) / calls)
        return statistics.median(times) * 1e6, calls, out, None
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    graph.replay()

    def timed(calls: int) -> float:  # ms per replay
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls

    calls = min(replays, max(10, int(budget_s * 1e3 / max(timed(3), 1e-6))))
    return statistics.median(timed(calls) for _ in range(repeats)) * 1e3, calls, out, graph


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240] if text else ''}"


def run_impl(name: str, x: Inputs, device: str, replays: int, repeats: int, budget_s: float, tol: float,
             refs: dict) -> dict:
    """One row: the implementation timed and checked (status ``ok``, ``skipped``, ``error`` or ``WRONG``)."""
    row = {"impl": name, "status": "ok", "us": None, "replays": None, "max_abs_err": None, "note": ""}
    graph = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn, row["note"], kind = IMPLS[name](x, device)
            try:
                fn()  # eager first: a backend's refusal surfaces here, before any capture
            except RuntimeError as exc:
                if not any(text in str(exc) for text in ("No available kernel", "No viable backend")):
                    raise
                # PyTorch says why in warnings: "<backend> ... not used because:", then the reason
                why = [line.strip() for w in caught for line in str(w.message).splitlines() if line.strip()]
                raise Skip("refused: " + ("; ".join(why)[:300] if why else _first_line(exc))) from None
        us, row["replays"], out, graph = time_call(fn, device, replays=replays, repeats=repeats,
                                                   budget_s=budget_s)
        _sync(device)
        if kind not in refs:
            refs[kind] = reference(x, x.slice_len, masked=False) if kind == "unmasked" else reference(x)
        err = (_unfold(x, out).float() - refs[kind]).abs().max().item()
        row.update(us=us, max_abs_err=err)
        if not err <= tol:  # NaN too
            row["status"] = "WRONG"
    except Skip as exc:
        row.update(status="skipped", note=str(exc))
    except Exception as exc:  # noqa: BLE001 - a compile or capture failure is a row, not the end of the run
        row.update(status="error", note=_first_line(exc))
    finally:
        del graph
    return row


# ----------------------------------------------------------------------------------------------------------------
# Report


def case_rows(x: Inputs, rows: list[dict], *, esize: int, copy_bps: float) -> list[dict]:
    """The case's columns and byte floors added to its implementations' rows."""
    per_slot = 2 * KV_HEADS * HEAD_DIM * esize  # keys and values of one slot, one row
    live_bytes, all_bytes = sum(x.live) * per_slot, x.batch * x.slots * per_slot
    out = []
    for row in rows:
        us = row["us"]
        floor_us = live_bytes / copy_bps * 1e6
        out.append({"batch": x.batch, "n": x.n, "slots": x.slots, "live_mean": round(sum(x.live) / len(x.live), 1),
                    "live_min": min(x.live), "live_max": max(x.live), "slice_len": x.slice_len, **row,
                    "live_kv_bytes": live_bytes, "all_kv_bytes": all_bytes, "floor_live_us": floor_us,
                    "floor_pct_live": None if us is None else 100 * floor_us / us,
                    "floor_pct_all": None if us is None else 100 * all_bytes / copy_bps * 1e6 / us})
    return out


def _fmt(value, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown(rows: list[dict], header: str) -> str:
    """The table, one line per case and implementation, under a provenance line."""
    lines = [header, "",
             "| B | n | S | live (mean, range) | impl | us | max abs err | live KV MB | all KV MB | % floor live "
             "| % floor all | status / note |",
             "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        note = r["status"] + (f": {r['note']}" if r["note"] else "")
        lines.append(f"| {r['batch']} | {r['n']} | {r['slots']} | {r['live_mean']:g} ({r['live_min']}-{r['live_max']}) "
                     f"| {r['impl']} | {_fmt(r['us'], '.1f')} | {_fmt(r['max_abs_err'], '.1e')} "
                     f"| {r['live_kv_bytes'] / 1e6:.1f} | {r['all_kv_bytes'] / 1e6:.1f} "
                     f"| {_fmt(r['floor_pct_live'], '.0f')} | {_fmt(r['floor_pct_all'], '.0f')} "
                     f"| {note.replace('|', '/')} |")
    return "\n".join(lines)


#: The implementations the summary table sets side by side (``--summary``).
SUMMARY_IMPLS = ["sdpa-default", "sdpa-cudnn", "flex", "flash-nomask", "triton"]


def summary(csv_path: Path) -> str:
    """One line per case: each of :data:`SUMMARY_IMPLS`'s microseconds per call (``-`` where it did not run ok)
    and the time to read the live KV bytes at the run's copy bandwidth."""
    rows = list(csv.DictReader(csv_path.open()))
    cases = list(dict.fromkeys((r["batch"], r["n"], r["slots"]) for r in rows))
    lines = ["| B x n x S | live slots (mean) | " + " | ".join(SUMMARY_IMPLS) + " | live KV at copy bandwidth |",
             "|---|---:|" + "---:|" * (len(SUMMARY_IMPLS) + 1)]
    for case in cases:
        mine = {r["impl"]: r for r in rows if (r["batch"], r["n"], r["slots"]) == case}
        first = next(iter(mine.values()))
        us = [f"{float(mine[i]['us']):.1f}" if i in mine and mine[i]["status"] == "ok" else "-" for i in SUMMARY_IMPLS]
        lines.append(f"| {'x'.join(case)} | {float(first['live_mean']):.0f} | " + " | ".join(us)
                     + f" | {float(first['floor_live_us']):.1f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring); bad input is one error line and exit 2."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the smoke cases, no graphs)")
    p.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU by default")
    p.add_argument("--cases", type=parse_cases, default=None,
                   help="BxNxS,... (batch x queries per row x slots) or 'all'; default: the full grid on CUDA, "
                        "a few tiny cases on CPU")
    p.add_argument("--impls", default=None, help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--repeats", type=int, default=5, help="timings per implementation (median reported)")
    p.add_argument("--replays", type=int, default=None,
                   help="calls per timing (default 200 on CUDA, 3 on CPU), fewer (at least 10 on CUDA) where they "
                        "would take over --timing-ms")
    p.add_argument("--timing-ms", type=float, default=20.0, help="time budget of one timing (default 20 ms)")
    p.add_argument("--out", type=Path, default=None, help="CSV of the rows")
    p.add_argument("--summary", type=Path, default=None,
                   help="print the summary table of a CSV this script wrote (microseconds per implementation and "
                        "case) and exit; no device needed")
    args = p.parse_args(argv)
    if args.summary is not None:
        return args
    try:
        args.device = resolve_device(args.device)
        args.dtype = canonical_dtype(args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    except SdlawsError as exc:
        p.error(str(exc))
    args.impls = list(IMPLS) if args.impls is None else [s.strip() for s in args.impls.split(",")]
    unknown = [name for name in args.impls if name not in IMPLS]
    if unknown:
        p.error(f"--impls: unknown {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    if args.repeats < 1 or (args.replays is not None and args.replays < 1) or not args.timing_ms > 0:
        p.error("--repeats and --replays are at least 1 and --timing-ms is positive")
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out: no folder {args.out.parent}")
    cuda = args.device.startswith("cuda")
    args.replays = args.replays or (200 if cuda else 3)
    args.cases = args.cases or (GRID if cuda else SMOKE)
    return args


@torch.no_grad()  # not inference_mode: torch.compile'd flex runs under it too
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary is not None:
        if not args.summary.is_file():
            print(f"error: --summary: no file {args.summary}", file=sys.stderr)
            return 2
        print(summary(args.summary))
        return 0
    device, dtype = args.device, getattr(torch, args.dtype)
    cuda = device.startswith("cuda")
    esize = torch.empty((), dtype=dtype).element_size()
    sizes = hwbench.GPU_SIZES if cuda else hwbench.CPU_SIZES
    copy_bps = hwbench.copy_bytes_per_s(device, sizes)
    prov = provenance(device_name(device))
    tol = TOLERANCE[args.dtype]
    print(f"copy bandwidth {copy_bps / 1e9:.0f} GB/s (read + write); median of {args.repeats} timings of up to "
          f"{args.replays} calls ({args.timing_ms:g} ms) per implementation; tolerance {tol:g} ({args.dtype})",
          flush=True)
    early = [name for name in args.impls if name not in LATE]
    late = [name for name in args.impls if name in LATE]
    results: dict[tuple, list[dict]] = {}
    for impls in (early, late):
        if not impls:
            continue
        for batch, n, slots in args.cases:
            key = (batch, n, slots)
            need = working_set_bytes(batch, n, slots, esize)
            if need > MAX_BYTES:
                if key not in results:
                    print(f"skip {batch}x{n}x{slots}: ~{need / 1e9:.0f} GB > {MAX_BYTES / 1e9:.0f} GB", flush=True)
                    results[key] = []
                continue
            x = make_inputs(batch, n, slots, dtype, device)
            refs: dict = {}
            rows = [run_impl(name, x, device, args.replays, args.repeats, args.timing_ms / 1e3, tol, refs)
                    for name in impls]
            rows = case_rows(x, rows, esize=esize, copy_bps=copy_bps)
            for r in rows:
                print(f"{batch}x{n}x{slots} {r['impl']:>15}: {r['status']:>7} {_fmt(r['us'], '8.1f')} us "
                      f"err {_fmt(r['max_abs_err'], '.1e')} {r['note']}", flush=True)
            results.setdefault(key, []).extend(rows)
            del x, refs
            if cuda:
                torch.cuda.empty_cache()
    order = {name: i for i, name in enumerate(IMPLS)}
    table = [r for key in args.cases for r in sorted(results.get(key, []), key=lambda r: order[r["impl"]])]
    extra = {"copy_bytes_per_s": copy_bps, "dtype": args.dtype, "device": device, "repeats": args.repeats,
             "tolerance": tol, **{k: prov[k] for k in ("gpu_name", "torch_version", "git_sha", "timestamp_utc")}}
    table = [{**r, **extra} for r in table]
    if args.out is not None:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS} for r in table)
    header = (f"Attention paths, {args.dtype}, heads {HEADS}/{KV_HEADS} (query/KV), head size {HEAD_DIM}; copy "
              f"bandwidth {copy_bps / 1e9:.0f} GB/s; {describe(prov)}")
    print(markdown(table, header), flush=True)
    wrong = [f"{r['batch']}x{r['n']}x{r['slots']} {r['impl']}" for r in table
             if r["status"] == "WRONG" or (r["status"] == "error" and r["impl"] not in LATE)]
    if wrong:
        print(f"FAILED: {len(wrong)} implementation(s) wrong or broken: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
