"""Hardware micro-benchmarks and forward-pass timing sweeps for calibrating the roofline.

:func:`measure_hardware` measures what the planner's cost model needs (``sdlaws.hardware.PROFILE_KEYS``):

- achieved dense matmul FLOP/s: one large square GEMM, ``2 n^3`` FLOPs, median over repeats;
- achieved memory bandwidth: one large device-to-device copy, counting the bytes read plus the bytes written;
- kernel launch overhead: a one-element kernel launched many times back to back (per-launch wall time), and
  the same kernels replayed from one CUDA graph (per-kernel cost once the CPU launch path is removed).

GPU timings use CUDA events around many back-to-back launches; on CPU the same code runs with small sizes and
``time.perf_counter`` (for tests; the device is labelled ``"cpu"``).

:func:`time_forward` times one forward pass of a model for each (batch size, tokens per row) at a fixed KV
length, with a pre-filled static KV cache, replaying a captured CUDA graph on GPU: the ``step`` table. A model
split over ``tp`` GPUs (:mod:`sdlaws.measure.tp`) is timed the same way on every rank (rank 0 writes), and each
point also gets the time of the pass's all-reduces alone (:func:`allreduce_time_s`).

One module, longer than most, because both halves calibrate the same roofline from one command (``sdlaws measure
hardware``) and time alike (untimed warm-up, then the median of repeats on a synchronised device).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdlaws import checks, io
from sdlaws.errors import ConfigError, error_cell, naming
from sdlaws.measure import memory, tp
from sdlaws.measure.config import stable_run_id
from sdlaws.measure.hfcompat import cache_keyword
from sdlaws.measure.models import (ModelInfo, canonical_dtype, device_memory_bytes, device_name, inspect_model,
                                   load_model, resolve_device)
from sdlaws.provenance import provenance


@dataclass(frozen=True)
class BenchSizes:
    """Problem sizes and repeat counts of the micro-benchmarks."""

    matmul_n: int           # square GEMM side
    copy_bytes: int         # bytes copied per repeat (traffic counted is twice this)
    num_repeats: int        # timed repeats (median reported)
    num_launches: int       # tiny kernels per launch-overhead measurement


#: GPU sizes: an 8192^3 bf16 GEMM (1.1 TFLOP) and a 1 GiB copy run long enough (~1 ms) to swamp timer noise.
GPU_SIZES = BenchSizes(matmul_n=8192, copy_bytes=1 << 30, num_repeats=30, num_launches=1000)
#: CPU sizes: small, so that tests run in well under a second.
CPU_SIZES = BenchSizes(matmul_n=256, copy_bytes=1 << 24, num_repeats=5, num_launches=200)


@dataclass(frozen=True)
class HardwareProfile:
    """Measured device rates (the JSON of ``sdlaws measure hardware``)."""

    gpu_name: str
    memory_bytes: int
    matmul_flops_per_s: float
    hbm_bytes_per_s: float
    launch_overhead_s: float
    graph_launch_overhead_s: float | None  # None on CPU (no CUDA graphs)
    dtype: str
    sizes: BenchSizes
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: the rates, the sizes and the provenance fields."""
        data = asdict(self)
        return {**{k: v for k, v in data.items() if k not in ("sizes", "provenance")}, **data["sizes"],
                **self.provenance}

    def summary(self) -> str:
        """A few lines in engineering units."""
        graph = ("n/a" if self.graph_launch_overhead_s is None else f"{self.graph_launch_overhead_s * 1e6:.2f} us")
        return "\n".join([
            f"device            {self.gpu_name} ({self.memory_bytes / 2**30:.1f} GiB)",
            f"matmul ({self.dtype})   {self.matmul_flops_per_s / 1e12:.3g} TFLOP/s",
            f"memory bandwidth  {self.hbm_bytes_per_s / 1e9:.0f} GB/s (read + write)",
            f"launch overhead   {self.launch_overhead_s * 1e6:.2f} us/kernel eager, {graph} in a CUDA graph"])


def _timer(device: str) -> Callable[[Callable[[], None]], float]:
    """``time_once(fn) -> seconds`` for one call of ``fn``: CUDA events on GPU, ``perf_counter`` on CPU."""
    import torch

    if not device.startswith("cuda"):
        def time_once(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return time_once

    def time_once_cuda(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s
    return time_once_cuda


def median_time_s(fn: Callable[[], None], device: str, *, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    time_once = _timer(device)
    for _ in range(warmup):
        time_once(fn)
    return statistics.median(time_once(fn) for _ in range(repeats))


def matmul_flops_per_s(device: str, dtype: str, sizes: BenchSizes) -> float:
    """Achieved FLOP/s of an ``n x n @ n x n`` matmul (``2 n^3`` FLOPs)."""
    import torch

    n = sizes.matmul_n
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen)
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype), generator=gen)
    out = torch.empty_like(a)
    seconds = median_time_s(lambda: torch.matmul(a, b, out=out), device, repeats=sizes.num_repeats)
    return 2.0 * n**3 / seconds


def copy_bytes_per_s(device: str, sizes: BenchSizes) -> float:
    """Achieved memory bandwidth of a device-to-device copy, counting read + write bytes."""
    import torch

    src = torch.empty(sizes.copy_bytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    seconds = median_time_s(lambda: dst.copy_(src), device, repeats=sizes.num_repeats)
    return 2.0 * sizes.copy_bytes / seconds


def launch_overhead_s(device: str, sizes: BenchSizes) -> float:
    """Wall seconds per launch of a one-element kernel, launched ``num_launches`` times back to back."""
    import torch

    x = torch.zeros(1, device=device)

    def launches():
        for _ in range(sizes.num_launches):
            x.add_(1.0)
    return median_time_s(launches, device, repeats=sizes.num_repeats) / sizes.num_launches


def graph_launch_overhead_s(device: str, sizes: BenchSizes) -> float | None:
    """Seconds per one-element kernel replayed from a CUDA graph of ``num_launches`` kernels (None on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return None
    x = torch.zeros(1, device=device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        x.add_(1.0)  # warm the kernel outside capture, as torch.cuda.graph requires
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(sizes.num_launches):
            x.add_(1.0)
    return median_time_s(graph.replay, device, repeats=sizes.num_repeats) / sizes.num_launches


def measure_hardware(device: str = "auto", *, dtype: str = "bfloat16", sizes: BenchSizes | None = None) -> HardwareProfile:
    """Run the micro-benchmarks on ``device`` (GPU sizes on CUDA, CPU sizes otherwise, unless ``sizes``)."""
    device = resolve_device(device)
    dtype = canonical_dtype(dtype)
    sizes = sizes or (GPU_SIZES if device.startswith("cuda") else CPU_SIZES)
    name = device_name(device)
    return HardwareProfile(
        gpu_name=name, memory_bytes=int(device_memory_bytes(device)),
        matmul_flops_per_s=matmul_flops_per_s(device, dtype, sizes), hbm_bytes_per_s=copy_bytes_per_s(device, sizes),
        launch_overhead_s=launch_overhead_s(device, sizes),
        graph_launch_overhead_s=graph_launch_overhead_s(device, sizes), dtype=dtype, sizes=sizes,
        provenance=provenance(name))


# ----------------------------------------------------------------------------------------------------------------
# Forward-pass timing sweep (the ``step`` table)


def _additive_causal_mask(batch: int, start: int, num: int, cache_len: int, dtype, device):
    """``(B, 1, num, S)`` additive mask: query ``start + j`` sees slots ``0 .. start + j``."""
    import torch

    slot = torch.arange(cache_len, device=device)
    query = torch.arange(start, start + num, device=device)
    mask = torch.where(slot[None, :] <= query[:, None], 0.0, torch.finfo(dtype).min).to(dtype)
    return mask[None, None].expand(batch, 1, num, cache_len)


def _forward_inputs(model, batch: int, start: int, num: int, cache_len: int, cache, gen) -> dict[str, Any]:
    """Static keyword inputs of a forward over positions ``start .. start + num - 1`` of every row.

    Also points the cache's write slots at those positions (the new keys/values land there).
    """
    import torch

    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    positions = torch.arange(start, start + num, device=device)
    cache.write_slots = positions[None].expand(batch, num)  # (B, num): slot of each new token
    return dict(input_ids=torch.randint(0, vocab, (batch, num), device=device, generator=gen),
                attention_mask=_additive_causal_mask(batch, start, num, cache_len, model.dtype, device),
                position_ids=positions[None].expand(batch, num), use_cache=True, **{cache_keyword(model): cache})


#: Tokens (batch x positions) per forward when filling a timing cache.
PREFILL_TOKENS = 65536


def _prefilled_cache(model, batch: int, kv_len: int, cache_len: int, gen):
    """A static KV cache of ``cache_len`` slots whose first ``kv_len`` hold random-token keys/values.

    The cache is the engine's :class:`~sdlaws.measure.kvcache.SlotCache` (fixed write slots, explicit masks),
    so that timed forwards run exactly the attention and cache writes of a decode or verify step.
    """
    from sdlaws.measure.kvcache import SlotCache

    cache = SlotCache(model.config.get_text_config().num_hidden_layers, cache_len)
    # Fill in chunks of positions so that activations stay bounded at large batch x kv_len (batch 256 x 2048
    # tokens in one pass would need tens of GB); logits_to_keep=1 skips the (B, chunk, vocab) logits.
    chunk = max(1, PREFILL_TOKENS // batch)
    for start in range(0, kv_len, chunk):
        num = min(chunk, kv_len - start)
        model(**_forward_inputs(model, batch, start, num, cache_len, cache, gen), logits_to_keep=1)
    return cache


def _wall_median_s(fn: Callable[[], Any], device: str, repeats: int, warmup: int) -> float:
    """Median wall seconds of ``fn()`` with a device synchronisation on both sides of each call."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_time_s(model, cache, cache_len: int, batch: int, tokens: int, kv_len: int, *, repeats: int,
                   warmup: int, cuda_graphs: bool, seed: int = 0) -> float:
    """Median seconds of one forward of ``(batch, tokens)`` new tokens over a cache holding ``kv_len`` tokens.

    ``cache`` is a static cache of ``cache_len >= kv_len + tokens`` slots. Every repeat writes the same slots
    ``kv_len .. kv_len + tokens - 1``, so the KV length stays fixed.
    """
    import torch

    from sdlaws.measure.graphs import PhaseRunner

    device = str(next(model.parameters()).device)
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = _forward_inputs(model, batch, kv_len, tokens, cache_len, cache, gen)

    def step():
        model(**inputs)
    # the engine's own capture recipe (side-stream warm-up, eager fallback if capture fails)
    fn = PhaseRunner(step, [], use_graph=cuda_graphs and device.startswith("cuda"), name="timed forward")
    fn.prepare()  # capture outside the timed calls
    return _wall_median_s(fn, device, repeats, warmup)


def allreduce_time_s(model, group, batch: int, tokens: int, *, repeats: int, warmup: int, cuda_graphs: bool) -> float:
    """Median seconds of the all-reduces of one tensor-parallel forward of ``(batch, tokens)``, run alone.

    Two per layer (after the o and the down projection) of the ``(batch x tokens, hidden)`` activations in the
    model's dtype, over ``group``, launched like the forward (one CUDA graph on GPU): the term the planner
    models as ``sdlaws.roofline.allreduce_time_s``.
    """
    import torch
    import torch.distributed as dist

    from sdlaws.measure.graphs import PhaseRunner

    config = model.config.get_text_config()
    device = str(next(model.parameters()).device)
    activations = torch.zeros(batch * tokens, config.hidden_size, dtype=model.dtype, device=device)

    def reduces():
        for _ in range(2 * config.num_hidden_layers):
            dist.all_reduce(activations, group=group)
    fn = PhaseRunner(reduces, [], use_graph=cuda_graphs and device.startswith("cuda"), name="timed all-reduces")
    fn.prepare()
    return _wall_median_s(fn, device, repeats, warmup)


#: Accepted ranges of a forward-timing sweep: field -> (option, low, high).
STEP_RANGES: dict[str, tuple[str, int, int]] = {
    "batch_sizes": ("--batch", 1, 2**20), "tokens_per_row": ("--tokens", 1, 65536), "kv_len": ("--kv", 1, 2**24),
    "num_repeats": ("--repeats", 1, 100_000), "num_warmup": ("warm-up repeats", 0, 1000),
    "tp_size": ("--tp", 1, 1024),
}


@dataclass(frozen=True)
class StepSweep:
    """A forward-timing sweep: batch sizes x tokens per row at one KV length."""

    batch_sizes: tuple[int, ...] = (1, 8, 64)
    tokens_per_row: tuple[int, ...] = (1, 2, 4, 8, 16)
    kv_len: int = 512
    num_repeats: int = 20
    num_warmup: int = 3
    cuda_graphs: bool = True
    seed: int = 0
    tp_size: int = 1    # GPUs the model is split over (tensor parallel)

    def __post_init__(self) -> None:
        """:class:`ConfigError` naming the option of a value outside :data:`STEP_RANGES`."""
        for name, (option, lo, hi) in STEP_RANGES.items():
            value = getattr(self, name)
            checks.numbers(option, value if isinstance(value, tuple) else (value,), lo, hi, integer=True)


def check_steps(model_spec: str, out: str | Path, sweep: StepSweep, *, dtype: str = "bfloat16", device: str = "auto",
                trust_remote_code: bool = False, device_memory: bool = True) -> None:
    """Check a forward-timing sweep before anything is measured: the step CSV (a torn last line is cut off), the
    model's config, its context length and the memory of the largest point (:mod:`sdlaws.measure.memory`; a
    model split over ``sweep.tp_size`` devices counts its share on one; ``device_memory=False``, in the process
    that starts a torchrun launch, leaves the device alone).

    Raises
    ------
    ConfigError, ModelError, InputError
        One line naming the option.
    """
    checks.output_file("--timing-out", out)
    io.repair_tail(out)
    io.run_status(out)  # refuses a file that is not a measurement CSV
    with naming("--model"):
        model = inspect_model(model_spec, trust_remote_code=trust_remote_code)
    batch, tokens = max(sweep.batch_sizes), max(sweep.tokens_per_row)
    if model.context_len is not None and sweep.kv_len + tokens > model.context_len:
        raise ConfigError(f"--kv {sweep.kv_len} + --tokens {tokens} = {sweep.kv_len + tokens} positions exceed the "
                          f"{model.context_len}-token context of {model_spec}; lower --kv")
    device = resolve_device(device)
    need = memory.need(f"{model_spec}, batch {batch}, {tokens} tokens per row after {sweep.kv_len}",
                       memory.model_shape(model.config, model_spec), None, dtype=canonical_dtype(dtype),
                       batch_size=batch, longest_prompt=sweep.kv_len, max_new_tokens=tokens, depth=0, topk=1,
                       budget=0, cuda=device.startswith("cuda"), tp_size=sweep.tp_size)
    if device_memory:
        memory.check_fits([need], memory.free_bytes(device), device)


def time_forward(model, info: ModelInfo, sweep: StepSweep, *, gpu_name: str, done: set[str] = frozenset(),
                 on_row: Callable[[dict[str, Any]], None] = lambda row: None, progress: bool = False,
                 forward_impl: str = "") -> list[dict]:
    """Time every (batch size, tokens per row) of ``sweep``; returns ``step`` rows (also passed to ``on_row``),
    recording ``forward_impl`` (``"fused"`` or ``"hf"``: the code path ``model`` runs) on each.

    Rows whose ``run_id`` is in ``done`` are skipped; an out-of-memory or other error of one point becomes a
    ``status=failed`` row and the sweep goes on. A split model's points also time their all-reduces alone.
    """
    import torch
    from rich.progress import Progress

    device = str(next(model.parameters()).device)
    dtype = str(model.dtype).removeprefix("torch.")
    rows = []
    points = [(b, t) for b in sweep.batch_sizes for t in sweep.tokens_per_row]
    with Progress(disable=not progress) as bar:
        task = bar.add_task("forward timing", total=len(points))
        for batch in sweep.batch_sizes:
            todo = [t for t in sweep.tokens_per_row if _step_id(info, batch, t, sweep, dtype, gpu_name) not in done]
            rows += _time_batch(model, info, sweep, batch, todo, gpu_name, dtype, on_row, forward_impl)
            bar.advance(task, len(sweep.tokens_per_row))
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def _time_batch(model, info, sweep: StepSweep, batch: int, tokens_list: list[int], gpu_name: str, dtype: str,
                on_row, forward_impl: str) -> list[dict]:
    """Rows of one batch size: one pre-filled cache, one timing per tokens-per-row value."""
    import torch

    from sdlaws.measure import fastpath

    if not tokens_list:
        return []
    rows, cache = [], None
    device = str(next(model.parameters()).device)
    cache_len = sweep.kv_len + max(tokens_list)
    group = tp.group_of(model)
    timing = dict(repeats=sweep.num_repeats, warmup=sweep.num_warmup, cuda_graphs=sweep.cuda_graphs)
    with torch.inference_mode():
        for tokens in tokens_list:
            row = {**_step_row(info, batch, tokens, sweep, dtype, gpu_name), "forward_impl": forward_impl}
            try:
                if cache is None:
                    gen = torch.Generator(device=device).manual_seed(sweep.seed)
                    cache = _prefilled_cache(model, batch, sweep.kv_len, cache_len, gen)
                row.update(status="ok", error="", median_time_s=forward_time_s(
                    model, cache, cache_len, batch, tokens, sweep.kv_len, seed=sweep.seed, **timing))
                row["kernel_choices"] = fastpath.kernel_choices(forward_impl)  # made in the timing's warm-up
                if group is not None:
                    row["allreduce_time_s"] = allreduce_time_s(model, group, batch, tokens, **timing)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a large batch; record and go on
                row.update(status="failed", error=error_cell(exc))
            on_row(row)
            rows.append(row)
    return rows


def _step_id(info: ModelInfo, batch: int, tokens: int, sweep: StepSweep, dtype: str, gpu_name: str) -> str:
    """Resume key of one forward-timing point."""
    split = {"tp_size": sweep.tp_size} if sweep.tp_size > 1 else {}  # one-GPU points keep their ids
    return stable_run_id({"model": info.name, "batch_size": batch, "tokens_per_row": tokens, "kv_len": sweep.kv_len,
                          "num_repeats": sweep.num_repeats, "cuda_graphs": sweep.cuda_graphs, "seed": sweep.seed,
                          "dtype": dtype, "gpu_name": gpu_name, **split})


def _step_row(info: ModelInfo, batch: int, tokens: int, sweep: StepSweep, dtype: str, gpu_name: str) -> dict:
    """Provenance and configuration columns of a ``step`` row (the timing is added by the caller)."""
    return {**provenance(gpu_name), "run_id": _step_id(info, batch, tokens, sweep, dtype, gpu_name), "dtype": dtype,
            "seed": sweep.seed, "model_name": info.name, "model_params": info.params, "model_layers": info.layers,
            "hidden_size": info.hidden_size, "batch_size": batch, "tokens_per_row": tokens, "kv_len": sweep.kv_len,
            "num_repeats": sweep.num_repeats, "tp_size": sweep.tp_size}


def measure_steps(model_spec: str, out: str | Path, sweep: StepSweep = StepSweep(), *, dtype: str = "bfloat16",
                  device: str = "auto", trust_remote_code: bool = False, progress: bool = True) -> list[dict]:
    """Load a model and append a ``step`` row per (batch size, tokens per row) not yet ``ok`` in ``out``.

    The forward timed is the one the decoding engine runs by default (the fused fast path where supported). A
    draft head (``head:random:NAME?layers=L`` or a head directory) is timed as one draft step: its layers, then
    its target's final norm and LM head (random stand-ins of the target's shape). With ``sweep.tp_size > 1`` this
    process is one rank of a torchrun launch: the model is split over the launch and rank 0 appends the rows
    (every rank reads ``out`` before the first timed pass, which needs them all).
    """
    from sdlaws.measure import fastpath

    device = resolve_device(device)
    mesh = tp.join(sweep.tp_size, device) if sweep.tp_size > 1 else None
    model, _, info = load_model(model_spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                seed=sweep.seed, mesh=mesh)
    if info.head:
        from sdlaws.measure.head import HeadStep, stand_in_modules

        model.share(*stand_in_modules(model.config, device=device, dtype=model.dtype, seed=sweep.seed))
    fast = fastpath.wrap(model)  # the model itself where the fast path does not apply
    impl = "hf" if fast is model else fast.impl
    if info.head:
        fast = HeadStep(fast)  # its layers (on the fused path, as the engine runs them), then the LM head
    writes = tp.rank() == 0
    return time_forward(fast, info, sweep, gpu_name=device_name(device), done=io.done_run_ids(out),
                        on_row=lambda row: io.append_row(out, row, "step") if writes else None,
                        progress=progress and writes, forward_impl=impl)
