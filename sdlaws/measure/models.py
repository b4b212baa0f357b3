"""Loading target and draft models: local directories, hub ids (``@revision``) and ``random:`` shapes.

A model spec is one string:

``/path/to/dir``
    A local Hugging Face model directory (``config.json`` + weights). If it holds an ``sdlaws_train.json``
    written by ``sdlaws train`` (fields ``params``, ``layers``, ``pretrain_tokens``), those values fill
    :class:`ModelInfo`.
``owner/name[@revision]``
    A Hugging Face hub id, optionally pinned to a branch, tag or commit. With ``HF_HUB_OFFLINE=1`` only the
    local cache is consulted (``local_files_only``), so a missing model fails at once instead of retrying.
``random:NAME[?key=value&key=value]``
    Random weights in the shape of a published model (:data:`SHAPES`), for timing-only runs: step time does
    not depend on the weights. ``key=value`` overrides any config field, e.g.
    ``random:llama-3.2-1b?num_hidden_layers=4``. Weights are drawn from a seeded normal directly on the
    target device in the target dtype, skipping transformers' slow per-module initialisation.
``head:random:NAME[?layers=L&key=value]``
    A random-weight feature-level draft head (:mod:`sdlaws.measure.head`) of ``L`` layers (default 1) built
    for the target shape ``NAME``, e.g. ``head:random:llama-3.1-8b?layers=1`` for the target
    ``random:llama-3.1-8b``: EAGLE's head shapes, for timing runs. Other keys override head config fields.

A local directory or hub id whose ``config.json`` has ``model_type = "sdlaws_feature_head"`` (what ``sdlaws
train head`` writes) loads as a trained head; its config names the target it was trained for. A head is only
a draft: the decoder attaches it to the target it is given.

One module because every model spec form (directory, hub id, random shape, draft head) resolves
through one parser and one loader.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdlaws.dtypes import ALIASES, LOADABLE, dtype_name
from sdlaws.errors import ConfigError, ModelError
from sdlaws.measure.hfcompat import HEAD_MODEL_TYPE
from sdlaws.shapes import SHAPES, parse_overrides

#: Name of the metadata file ``sdlaws train`` writes next to each checkpoint.
TRAIN_METADATA = "sdlaws_train.json"

#: Prefix of random-weight draft head specs (``head:random:NAME?layers=L``).
HEAD_RANDOM_PREFIX = "head:random:"


#: Std of the seeded normal used for random weight matrices (the ``initializer_range`` of the configs above).
RANDOM_INIT_STD = 0.02

# A hub id: "name" or "owner/name" (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (see the module docstring)."""

    kind: Literal["local", "hub", "random", "head"]
    name: str                      # local path, hub repo id, or shape name (random, head)
    revision: str | None = None    # hub only
    overrides: dict[str, Any] = field(default_factory=dict)  # random and head only
    raw: str = ""                  # the spec as given (written to CSVs as the model name)


@dataclass(frozen=True)
class ModelInfo:
    """What the measurement tables record about a model.

    ``params`` counts every parameter once (tied embeddings once), or the value of ``sdlaws_train.json``; a
    draft head's (``head``) are its own, without the target's embedding and LM head that it shares.
    """

    name: str
    params: int
    layers: int
    hidden_size: int
    vocab_size: int
    pretrain_tokens: float | None = None
    head: bool = False

    def columns(self, prefix: str) -> dict[str, Any]:
        """Schema columns ``<prefix>_name/_params/_layers/_pretrain_tokens`` for a ``spec`` or ``ppl`` row."""
        return {f"{prefix}_name": self.name, f"{prefix}_params": self.params, f"{prefix}_layers": self.layers,
                f"{prefix}_pretrain_tokens": self.pretrain_tokens}


@dataclass(frozen=True)
class ModelConfig:
    """What can be known of a model before its weights load: its parsed spec, transformers (text) config and
    tokenizer (None for ``random:`` specs and directories without tokenizer files, or when not asked for)."""

    spec: ModelSpec
    config: Any
    tokenizer: Any = None

    @property
    def vocab_size(self) -> int:
        """Rows of the LM head (the logits per position)."""
        return int(self.config.vocab_size)

    @property
    def context_len(self) -> int | None:
        """Positions the model was built for (``max_position_embeddings``), None when the config has none."""
        value = getattr(self.config, "max_position_embeddings", None)
        return None if value is None else int(value)


def inspect_model(spec: str, *, trust_remote_code: bool = False, tokenizer: bool = False) -> ModelConfig:
    """Parse a spec and read its config (and tokenizer if asked), without loading weights: cheap checks first.

    Raises
    ------
    ModelError
        Malformed spec, missing or unreadable directory, a config.json that is not a model config, a hub id not
        cached while offline, an unknown ``random:`` override.
    """
    parsed = parse_spec(spec)
    if parsed.kind in ("random", "head"):
        return ModelConfig(parsed, random_config(parsed).get_text_config())
    from transformers import AutoConfig

    kwargs = _from_pretrained_kwargs(parsed, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(parsed.name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(_load_error(parsed, exc)) from None
    return ModelConfig(parsed, config.get_text_config(), _load_tokenizer(parsed, kwargs) if tokenizer else None)


def canonical_dtype(dtype: str) -> str:
    """Canonical torch dtype name for an alias (``bf16`` -> ``bfloat16``); :class:`ModelError` unless a model
    loads in it (:data:`sdlaws.dtypes.LOADABLE`)."""
    try:
        name = dtype_name(dtype)
    except ConfigError:
        name = None
    if name not in LOADABLE:
        spellings = sorted({*LOADABLE, *(alias for alias, name in ALIASES.items() if name in LOADABLE)})
        raise ModelError(f"--dtype {dtype}: unknown dtype; use one of {', '.join(spellings)}")
    return name


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values are checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is visible; use --device cpu")
    return device


def free_device_memory(device: str) -> None:
    """On CUDA, collect garbage (decoder workspaces and training steps hold reference cycles) and return cached
    blocks to the driver, so the next configuration (or the one after an OOM) starts from free memory; no-op on
    CPU."""
    import gc

    import torch

    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    """Human-readable device name for provenance: the GPU name, or ``"cpu"``."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec string.

    Raises
    ------
    ModelError
        Empty spec, a path that does not exist, a malformed ``random:`` spec or an unknown shape name.
    """
    raw = str(spec).strip()
    if not raw:
        raise ModelError("empty model spec; pass a local directory, a hub id or random:NAME")
    if raw.startswith(HEAD_RANDOM_PREFIX):
        return _parse_random(raw, HEAD_RANDOM_PREFIX, "head")
    if raw.startswith("random:"):
        return _parse_random(raw, "random:", "random")
    if os.path.exists(os.path.expanduser(raw)):
        return ModelSpec("local", os.path.expanduser(raw), raw=raw)
    repo, _, revision = raw.partition("@")
    looks_like_path = raw.startswith((".", "/", "~")) or raw.count("/") > 1 or not _HUB_ID.match(repo)
    if looks_like_path or (raw.count("@") and not revision):
        raise ModelError(f"{raw}: no such model directory; check the path (or use owner/name[@revision] for a hub id)")
    return ModelSpec("hub", repo, revision=revision or None, raw=raw)


def _parse_random(raw: str, prefix: str, kind: Literal["random", "head"]) -> ModelSpec:
    """Parse ``<prefix>NAME[?key=value&...]`` (values read as JSON where they parse)."""
    name, _, query = raw.removeprefix(prefix).partition("?")
    if name not in SHAPES:
        raise ModelError(f"{raw}: unknown random shape {name!r}; use one of {', '.join(SHAPES)}")
    example = "layers=2" if kind == "head" else "num_hidden_layers=4"
    try:
        overrides = parse_overrides(query)
    except ValueError as exc:
        raise ModelError(f"{raw}: override {str(exc)!r} is not key=value (e.g. {prefix}{name}?{example})") from None
    return ModelSpec(kind, name, overrides=overrides, raw=raw)


def load_model(spec: str, *, dtype: str = "bfloat16", device: str = "cuda", trust_remote_code: bool = False,
               seed: int = 0, mesh=None):
    """Load a causal LM from a spec, in eval mode on ``device`` in ``dtype`` (split over ``mesh`` when given).

    Parameters
    ----------
    spec : str
        Local directory, ``owner/name[@revision]`` or ``random:NAME[?key=value...]``.
    dtype : str
        ``bfloat16`` (``bf16``), ``float16`` (``fp16``) or ``float32`` (``fp32``).
    device : str
        ``cuda``, ``cuda:N``, ``cpu`` or ``auto``.
    trust_remote_code : bool
        Allow model code from the hub repository (off by default).
    seed : int
        Seed of the random weights of ``random:`` specs (ignored otherwise).
    mesh : torch.distributed.device_mesh.DeviceMesh, optional
        Split the model over this 1-D mesh (tensor parallelism, :mod:`sdlaws.measure.tp`): each rank allocates
        only its shards, and ``random:`` weights equal the unsplit model's for the same seed.

    Returns
    -------
    model : transformers.PreTrainedModel
    tokenizer : transformers tokenizer or None
        None for ``random:`` specs and for directories without tokenizer files.
    info : ModelInfo

    Raises
    ------
    ModelError
        Missing path, hub id not cached while offline, unreadable model, or weights larger than the device.
    """
    import torch

    parsed = parse_spec(spec)
    torch_dtype = getattr(torch, canonical_dtype(dtype))
    device = resolve_device(device)
    if mesh is not None:
        model, tokenizer = _build_sharded(parsed, torch_dtype, device, seed, trust_remote_code, mesh)
    elif parsed.kind == "random":
        model, tokenizer = _build_random(parsed, torch_dtype, device, seed), None
    elif parsed.kind == "head":
        model, tokenizer = _build_random_head(parsed, torch_dtype, device, seed), None
    else:
        model, tokenizer = _load_pretrained(parsed, torch_dtype, device, trust_remote_code)
    model.eval()
    return model, tokenizer, _model_info(model, parsed)


def model_config(spec: str, *, trust_remote_code: bool = False):
    """The transformers config of a model spec, read without its weights; :class:`ModelError` if unreadable."""
    from transformers import AutoConfig

    parsed = parse_spec(spec)
    if parsed.kind in ("random", "head"):
        return random_config(parsed)
    try:
        return AutoConfig.from_pretrained(parsed.name, revision=parsed.revision, trust_remote_code=trust_remote_code,
                                          local_files_only=parsed.kind == "local" or hub_offline())
    except (OSError, ValueError) as exc:
        raise ModelError(_load_error(parsed, exc)) from None


def random_config(spec: str | ModelSpec):
    """The transformers config of a ``random:`` spec: the named shape with its ``?key=value`` overrides."""
    from transformers import AutoConfig

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind not in ("random", "head"):
        raise ModelError(f"{spec.raw}: not a random: spec")
    if spec.kind == "head":
        return _random_head_config(spec)
    shape = {**SHAPES[spec.name]}
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    unknown = [k for k in spec.overrides if not hasattr(config, k)]
    if unknown:
        raise ModelError(f"{spec.raw}: unknown config field(s) {unknown} for {type(config).__name__}")
    for key, value in spec.overrides.items():
        setattr(config, key, value)
    return config


def _build_random(spec: ModelSpec, torch_dtype, device: str, seed: int):
    """Build a random-weight model directly on ``device`` in ``torch_dtype`` (no slow per-module init)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = random_config(spec)
    _check_fits(spec.raw, config, torch_dtype, device)
    with torch.device(device), _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.tie_weights()  # skipped by no_init_weights; ties lm_head to the embedding where the config says so
    _fill_random(model, seed, device)
    return model


def _random_head_config(spec: ModelSpec):
    """The :class:`~sdlaws.measure.head.HeadConfig` of a ``head:random:NAME?layers=L&...`` spec."""
    from sdlaws.measure.head import head_config

    overrides = dict(spec.overrides)
    layers = overrides.pop("layers", 1)
    target = ModelSpec("random", spec.name, raw=f"random:{spec.name}")
    try:
        return head_config(random_config(target), layers=layers, target=target.raw, **overrides)
    except ModelError as exc:
        raise ModelError(f"{spec.raw}: {exc}") from None


def _build_random_head(spec: ModelSpec, torch_dtype, device: str, seed: int):
    """A random-weight draft head on ``device`` in ``torch_dtype`` (seeded like ``random:`` models)."""
    import torch

    from sdlaws.measure.head import FeatureHead

    config = _random_head_config(spec)
    with torch.device(device), _no_init_weights():
        head = FeatureHead._from_config(config, dtype=torch_dtype)
    _fill_random(head, seed, device)
    return head


def _no_init_weights():
    """transformers' context that skips weight initialisation (moved between major versions)."""
    try:
        from transformers.initialization import no_init_weights  # transformers >= 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights  # transformers 4.x
    return no_init_weights()


def _fill_random(model, seed: int, device: str) -> None:
    """Seeded fill of every parameter, in ``named_parameters`` order (:func:`_random_fill_`)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied parameters are listed once
            _random_fill_(name, param, generator)


def _random_fill_(name: str, tensor, generator):
    """Fill one weight in place: matrices ~ N(0, RANDOM_INIT_STD), 1-D weights (norm gains) = 1, biases = 0."""
    if tensor.dim() >= 2:
        tensor.normal_(0.0, RANDOM_INIT_STD, generator=generator)
    elif name.endswith("bias"):
        tensor.zero_()
    else:
        tensor.fill_(1.0)
    return tensor


def _build_sharded(spec: ModelSpec, torch_dtype, device: str, seed: int, trust_remote_code: bool, mesh):
    """The model split over ``mesh``, built on the meta device and given only this rank's shards on ``device``.

    ``random:`` weights are drawn whole, parameter by parameter in the unsplit model's order and with its
    generator, then cut: the same values as :func:`_build_random`. A checkpoint is read whole into CPU memory by
    every rank (host memory for ``tp`` copies), then cut.
    """
    import torch

    from sdlaws.measure import tp

    if spec.kind == "random":
        config, tokenizer = random_config(spec), None
        _check_fits(spec.raw, config, torch_dtype, device, shards=mesh.size())
        generator = torch.Generator(device=device).manual_seed(seed)

        def source(name, param):
            return _random_fill_(name, torch.empty(param.shape, dtype=param.dtype, device=device), generator)
    else:
        whole, tokenizer = _load_pretrained(spec, torch_dtype, "cpu", trust_remote_code)
        config, weights = whole.config, dict(whole.named_parameters())

        def source(name, param):
            return weights[name].to(device)
    model = _sharded_skeleton(config, torch_dtype, device, mesh, trust_remote_code)
    tp.fill_shards(model, source)
    return model, tokenizer


def _sharded_skeleton(config, torch_dtype, device: str, mesh, trust_remote_code: bool):
    """An uninitialised model of ``config`` split over ``mesh``, holding this rank's shards on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    from sdlaws.measure import tp

    with torch.device("meta"), _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    tp.shard(model, mesh)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives each use of a tied weight its own tensor; tie them again
    for module in model.modules():  # buffers (rotary frequencies) were meta: transformers' init recomputes them
        if next(module.buffers(recurse=False), None) is not None:
            model._init_weights(module)
    return model


def _check_fits(raw: str, config, torch_dtype, device: str, shards: int = 1) -> None:
    """Refuse random weights larger than device memory; warn above half of it (KV cache needs room too).

    ``shards``: the weights are split over that many devices (tensor parallelism), each holding about a share.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    weight_bytes = params * torch.tensor([], dtype=torch_dtype).element_size() / shards
    memory_bytes = device_memory_bytes(device)
    share = f" (1/{shards} of them)" if shards > 1 else ""
    if weight_bytes > memory_bytes:
        raise ModelError(f"{raw}: {weight_bytes / 1e9:.1f} GB of weights{share} exceed the {memory_bytes / 1e9:.1f} GB "
                         f"of {device}; add ?num_hidden_layers=N to time fewer layers")
    if weight_bytes > memory_bytes / 2:
        warnings.warn(f"{raw}: {weight_bytes / 1e9:.1f} GB of weights{share} use over half of the "
                      f"{memory_bytes / 1e9:.1f} GB of {device}; large batches may run out of memory", stacklevel=3)


def device_memory_bytes(device: str) -> int:
    """Total memory of a CUDA device, or the machine's physical memory for ``cpu``."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (the hub must not be contacted)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_pretrained(spec: ModelSpec, torch_dtype, device: str, trust_remote_code: bool):
    """Model and tokenizer of a local directory or hub id (local files only when offline or local)."""
    from transformers import AutoModelForCausalLM

    import sdlaws.measure.head  # noqa: F401 - registers draft heads with the Auto classes (head directories load)

    kwargs = _from_pretrained_kwargs(spec, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(spec.name, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_error(spec, exc)) from None
    return model.to(device), _load_tokenizer(spec, kwargs)


def _from_pretrained_kwargs(spec: ModelSpec, trust_remote_code: bool) -> dict[str, Any]:
    """Keyword arguments of the ``from_pretrained`` calls (revision, remote code, local files only when offline or
    local); :class:`ModelError` for a local directory without config.json, which they cannot load."""
    if spec.kind == "local" and not (Path(spec.name) / "config.json").is_file():
        raise ModelError(f"{spec.raw}: not a Hugging Face model directory (no config.json)")
    return dict(revision=spec.revision, trust_remote_code=trust_remote_code,
                local_files_only=spec.kind == "local" or hub_offline())


def _load_error(spec: ModelSpec, exc: Exception) -> str:
    """One-line :class:`ModelError` message for a failed ``from_pretrained``."""
    if spec.kind == "hub" and hub_offline():
        return (f"{spec.raw}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                "pass a local model directory or download the model first")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{spec.raw}: cannot load model ({first})"


def _load_tokenizer(spec: ModelSpec, kwargs: dict):
    """The model's tokenizer, or None when the directory / repo has no tokenizer files."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec.name, **kwargs)
    except (OSError, ValueError, TypeError):
        return None


def _model_info(model, spec: ModelSpec) -> ModelInfo:
    """:class:`ModelInfo` from the loaded model, overridden by ``sdlaws_train.json`` fields when present."""
    config = model.config.get_text_config()
    meta = _train_metadata(spec)
    params = sum(p.numel() for p in model.parameters())
    return ModelInfo(name=spec.raw, params=int(meta.get("params", params)),
                     layers=int(meta.get("layers", config.num_hidden_layers)),
                     hidden_size=int(config.hidden_size), vocab_size=int(config.vocab_size),
                     pretrain_tokens=meta.get("pretrain_tokens"), head=config.model_type == HEAD_MODEL_TYPE)


def _train_metadata(spec: ModelSpec) -> dict[str, Any]:
    """Fields ``params``, ``layers``, ``pretrain_tokens`` of a local model's ``sdlaws_train.json``, if any."""
    path = Path(spec.name) / TRAIN_METADATA
    if spec.kind != "local" or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); fix or delete it") from None
    return {k: data[k] for k in ("params", "layers", "pretrain_tokens") if data.get(k) is not None}
