"""Tensor parallelism: a target split over ``tp`` processes of one host with PyTorch's DTensor tensor parallelism.

The split is :func:`torch.distributed.tensor.parallel.parallelize_module` applied with the model's own
``base_model_tp_plan`` (the plan transformers' ``tp_plan="auto"`` applies to Llama, Mistral and Qwen2): q/k/v and
gate/up projections column-wise (each rank holds ``heads / tp`` attention heads, so its KV cache holds only
theirs, and ``intermediate / tp`` MLP columns), o and down projections row-wise (their partial sums are
all-reduced: two all-reduces per layer). An untied LM head is split over the vocabulary and its logits gathered
(transformers' ``colwise_gather_output`` for ``lm_head``); embeddings, norms and the draft are replicated.

Every rank runs the same engine on the same inputs: the all-reduced activations and gathered logits are
identical on every rank and sampling is seeded alike, so every decision is the same everywhere
(:class:`CheckedDecoder` verifies it after each batch) and rank 0 alone writes rows. The processes are started
by ``torchrun`` (:func:`relaunch`), one per GPU with NCCL, or one per CPU process with gloo (tests).

References: PyTorch, "Tensor Parallelism - torch.distributed.tensor.parallel" (parallelize_module, ColwiseParallel,
RowwiseParallel; https://docs.pytorch.org/docs/2.13/distributed.tensor.parallel.html); Hugging Face transformers,
"Tensor parallelism" (``base_model_tp_plan``, ``tp_plan="auto"``;
https://huggingface.co/docs/transformers/tensor_parallelism).
"""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
import sys
from typing import Iterable

from sdlaws.errors import ConfigError
from sdlaws.measure.hfcompat import HEAD_MODEL_TYPE

#: Set in the environment of every launched process: NVLink multicast (NVLS) stays off in NCCL, PyTorch's symmetric
#: memory and NVSHMEM. sdlaws's collectives do not need it, and on a host whose GPUs are shared a program that uses
#: it can put them out of service.
LAUNCH_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

#: The parallel style of each ``base_model_tp_plan`` entry sdlaws applies (other styles are refused).
STYLE_NAMES = ("colwise", "rowwise")


def launched() -> bool:
    """True inside a process started by ``torchrun`` (it sets ``WORLD_SIZE`` for each worker)."""
    return "WORLD_SIZE" in os.environ


def check_launch(tp_size: int, device: str, configs: Iterable = ()) -> None:
    """:class:`ConfigError` unless ``tp_size`` processes can split each model of ``configs`` (transformers configs,
    read without weights) on ``device`` (as typed: ``cuda``, ``cpu``, ``auto``); checked before launching them."""
    import torch

    if tp_size < 1:
        raise ConfigError(f"--tp must be >= 1, got {tp_size}")
    if tp_size == 1:
        return
    if ":" in device:
        raise ConfigError(f"--device {device} names one GPU; with --tp the ranks take the visible GPUs in order "
                          "(choose them with CUDA_VISIBLE_DEVICES)")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.device_count() < tp_size:
        raise ConfigError(f"--tp {tp_size} needs {tp_size} GPUs; {torch.cuda.device_count()} are visible")
    for config in configs:
        plan(config, tp_size)


def relaunch(tp_size: int, args: list[str]) -> int:
    """Run ``python -m sdlaws ARGS`` in ``tp_size`` torchrun processes on this host; returns torchrun's exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp_size}",
               "-m", "sdlaws", *args]
    return subprocess.run(command, env={**os.environ, **LAUNCH_ENV}, check=False).returncode


@functools.lru_cache(maxsize=None)
def join(tp_size: int, device: str):
    """This process's 1-D device mesh over the ``tp_size`` processes of the launch (NCCL on GPU, gloo on CPU).

    Each rank uses GPU ``LOCAL_RANK``, so ``cuda`` (no index) means that GPU from here on.
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp_size:
        raise ConfigError(f"tensor parallelism over {tp_size} processes, but this launch has {world}; start it with "
                          f"--tp {tp_size} (torchrun --nproc-per-node {tp_size})")
    device_type = torch.device(device).type
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    mesh = init_device_mesh(device_type, (tp_size,))
    atexit.register(_leave)  # a process group left open aborts the interpreter at exit (gloo's threads)
    return mesh


def _leave() -> None:
    """Destroy the process group and free the meshes (no barrier: a rank that failed alone must still exit)."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    join.cache_clear()
    gc.collect()


def rank() -> int:
    """Rank of this process in its torchrun launch (0 without one), known before the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def plan(config, tp_size: int) -> dict:
    """The ``parallelize_module`` plan of a causal LM with ``config`` split over ``tp_size`` ranks.

    Raises
    ------
    ConfigError
        The architecture has no column/row-wise plan, or ``tp_size`` does not divide the sizes it splits.
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    text = config.get_text_config()
    if text.model_type == HEAD_MODEL_TYPE:  # a Llama config underneath, but a head drafts whole on every rank
        raise ConfigError("a feature-level draft head is not split: --tp splits targets (llama, mistral, qwen2); "
                          "heads run whole on every GPU as drafts")
    entries = getattr(text, "base_model_tp_plan", None) or {}
    if not entries or set(entries.values()) - set(STYLE_NAMES):
        raise ConfigError(f"model type {text.model_type!r} has no column/row-wise tensor-parallel plan; "
                          "--tp splits llama, mistral and qwen2 targets")
    sizes = {"num_attention_heads": text.num_attention_heads,
             "num_key_value_heads": getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
             "intermediate_size": text.intermediate_size, "vocab_size": text.vocab_size}
    bad = [f"{name}={size}" for name, size in sizes.items() if size % tp_size]
    if bad:
        raise ConfigError(f"--tp {tp_size} must divide {', '.join(bad)}")
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    # the plan's keys are relative to the base model ("layers.*.mlp.up_proj"): prefix its attribute ("model.")
    prefix = getattr(config, "base_model_prefix", None) or "model"
    out = {f"{prefix}.{key}": styles[style]() for key, style in entries.items()}
    if not text.tie_word_embeddings:  # a tied head is the embedding, which stays whole
        out["lm_head"] = ColwiseParallel(output_layouts=Replicate())
    return out


def shard(model, mesh) -> None:
    """Split ``model`` in place over ``mesh`` (its weights become DTensors; values are not communicated)."""
    from torch.distributed.tensor.parallel import parallelize_module

    parallelize_module(model, mesh, plan(model.config, mesh.size()), src_data_rank=None)


def fill_shards(model, source) -> None:
    """Set every parameter from its full value ``source(name, param)``: a split one gets this rank's shard of it."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, param in model.named_parameters():
            full = source(name, param)
            if isinstance(param, DTensor):
                full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
                param = param.to_local()
            param.copy_(full)


def group_of(model):
    """The process group a split model's weights are spread over, or None for a whole model."""
    from torch.distributed.tensor import DTensor

    for param in model.parameters():
        if isinstance(param, DTensor):
            return param.device_mesh.get_group()
    return None


def from_rank0(value, group):
    """Rank 0's ``value`` (any picklable object) on every rank of ``group``: a broadcast of its pickle."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return box[0]


def same_on_ranks(tokens: list[list[int]], device: str) -> bool:
    """Whether every rank holds the same ``tokens`` (an all-reduce of their min and max checksums)."""
    import zlib

    import torch
    import torch.distributed as dist

    checksum = zlib.crc32(repr(tokens).encode())
    both = torch.tensor([checksum, -checksum], dtype=torch.long, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return int(both[0]) == checksum == -int(both[1])


class CheckedDecoder:
    """A decoder whose every ``generate`` is checked to give the same tokens on all ranks (the lockstep that
    makes rank 0's row every rank's row); divergence raises, which fails the configuration on every rank."""

    def __init__(self, decoder, device: str):
        self.decoder, self.device = decoder, device

    def warmup(self, prompts: list[list[int]], batch_size: int | None = None) -> None:
        """One untimed ``generate`` (with ``batch_size``: ``serve``), checked like the others."""
        if batch_size is None:
            self.generate(prompts)
        else:
            self.serve(prompts, batch_size)

    def generate(self, prompts: list[list[int]]):
        """The wrapped decoder's ``generate``, after checking its tokens across ranks."""
        return self._checked(*self.decoder.generate(prompts))

    def serve(self, prompts: list[list[int]], batch_size: int):
        """The wrapped decoder's continuous ``serve``, after checking its tokens across ranks."""
        return self._checked(*self.decoder.serve(prompts, batch_size))

    def _checked(self, tokens: list[list[int]], stats):
        """``(tokens, stats)``; :class:`RuntimeError` unless every rank decoded the same tokens."""
        if not same_on_ranks(tokens, self.device):
            raise RuntimeError("tensor-parallel ranks decoded different tokens")
        return tokens, stats


def checked(factory):
    """A decoder factory (:data:`sdlaws.measure.sweep.DecoderFactory`) whose decoders are :class:`CheckedDecoder` s."""
    def build(target, draft, run, config, max_prompt_len):
        device = str(next(target.parameters()).device)
        return CheckedDecoder(factory(target, draft, run, config, max_prompt_len), device)
    return build
