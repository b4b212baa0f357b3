"""Hardware profiles for the roofline cost model (:mod:`sdlaws.roofline`).

A :class:`Hardware` holds vendor peak numbers (dense, i.e. *without* 2:4 structured sparsity) and the
efficiency factors (achieved / peak) that turn peaks into realistic rates. Presets cite the vendor datasheet;
peer tools disagree on several of these numbers (``docs/peers.md#hardware-numbers-across-tools``, e.g. H100-SXM HBM is
3072, 3350 or 3400 GB/s depending on the tool), so the vendor figure is used and the disagreement noted.

Default efficiencies are typical published values, replaced by a measured profile when one is given:

- HBM 0.82 on H100: inference-sim issue #415 ("bwEfficiencyFactor=0.82" cut TPOT MAPE from 47.7% to 36.1%);
  the same issue says InferSim uses 0.80 for A100, H800, H200 and GB200 (docs/peers.md#inference-sim-calibration).
  0.80 is used for every non-H100 preset.
- FLOP/s 0.7: the llm-analysis README suggests ~0.7 FLOPs efficiency for inference (docs/peers.md#roofline-tools).
- Kernel launch cost 4 us: "about 4-6 us" per kernel launch measured on an RTX 5070 Ti
  (https://susun-blog.com/blog/pegainfer-3-cuda-graph, secondary). CUDA graphs lower it; calibrate against
  measured step times (:func:`sdlaws.calibration.calibrate`) or pass a profile from ``sdlaws measure hardware``.

Units: FLOP/s, bytes/s, bytes, seconds. Memory sizes: NVIDIA and AMD datasheet "GB" for HBM parts are GiB-sized
(``nvidia-smi`` reports 81559 MiB on an H100 80GB), so presets use ``GB x 2**30``.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from sdlaws.errors import ConfigError, InputError

#: Hardware JSON is read strictly: a number must be a finite JSON number (not a string, boolean, NaN or infinity).
_JSON_FIELDS = ConfigDict(allow_inf_nan=False)
_T = TypeVar("_T")

GIB = 2**30  # bytes

DEFAULT_FLOPS_EFFICIENCY = 0.7    # llm-analysis README, ~0.7 for inference (docs/peers.md)
DEFAULT_HBM_EFFICIENCY = 0.80     # InferSim for A100/H800/H200/GB200 (inference-sim issue #415, docs/peers.md)
H100_HBM_EFFICIENCY = 0.82        # inference-sim issue #415, fitted on H100 TPOT (docs/peers.md)
DEFAULT_LAUNCH_OVERHEAD_S = 4e-6  # per kernel, un-graphed launch, 4-6 us measured (susun-blog, secondary)


@with_config(_JSON_FIELDS)
@dataclass(frozen=True)
class Hardware:
    """One accelerator: dense peak rates, memory, interconnect and achieved/peak efficiency factors.

    Attributes
    ----------
    name : str
        Preset or profile name.
    peak_bf16_flops_per_s : float
        Dense BF16/FP16 tensor-core peak, FLOP/s.
    peak_fp8_flops_per_s : float or None
        Dense FP8 peak, FLOP/s (None where the part has no FP8 tensor cores).
    hbm_bytes_per_s : float
        Peak device-memory bandwidth, bytes/s.
    memory_bytes : float
        Device memory, bytes.
    interconnect_bytes_per_s : float
        GPU-to-GPU bandwidth, bytes/s, bidirectional total as datasheets quote it (NVLink, Infinity Fabric,
        or PCIe where there is no NVLink). Used for tensor-parallel all-reduces.
    flops_efficiency, hbm_efficiency : float
        Achieved / peak, in (0, 1].
    launch_overhead_s : float
        Fixed cost per kernel (launch latency, ramp-up), seconds; a forward pass pays it once per kernel.
    source : str
        Where the numbers come from (datasheet or measured profile).
    """

    name: str
    peak_bf16_flops_per_s: float
    peak_fp8_flops_per_s: float | None
    hbm_bytes_per_s: float
    memory_bytes: float
    interconnect_bytes_per_s: float
    flops_efficiency: float = DEFAULT_FLOPS_EFFICIENCY
    hbm_efficiency: float = DEFAULT_HBM_EFFICIENCY
    launch_overhead_s: float = DEFAULT_LAUNCH_OVERHEAD_S
    source: str = ""

    def __post_init__(self) -> None:
        """Reject non-positive rates, sizes and efficiencies."""
        for name in ("peak_bf16_flops_per_s", "hbm_bytes_per_s", "memory_bytes", "flops_efficiency",
                     "hbm_efficiency"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hardware {self.name!r}: {name} must be > 0 (got {getattr(self, name)!r})")
        if self.launch_overhead_s < 0:
            raise ConfigError(f"hardware {self.name!r}: launch_overhead_s must be >= 0")

    @property
    def machine_balance_flops_per_byte(self) -> float:
        """Achieved BF16 FLOP/s per achieved byte/s: the roofline ridge point I_crit (docs/formulas.md#roofline)."""
        return (self.peak_bf16_flops_per_s * self.flops_efficiency) / (self.hbm_bytes_per_s * self.hbm_efficiency)

    def with_efficiency(self, *, flops_efficiency: float | None = None, hbm_efficiency: float | None = None,
                        launch_overhead_s: float | None = None, source: str | None = None) -> "Hardware":
        """Copy with some efficiency factors replaced (e.g. by a calibration)."""
        changes = {k: v for k, v in dict(flops_efficiency=flops_efficiency, hbm_efficiency=hbm_efficiency,
                                         launch_overhead_s=launch_overhead_s, source=source).items()
                   if v is not None}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "hardware dict") -> "Hardware":
        """Inverse of :meth:`to_dict`, every value checked against its field's type (:func:`typed`); unknown
        keys are rejected so typos do not pass silently."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"{source} has unknown key(s) {unknown}; allowed: {sorted(names)}")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
        if missing:
            raise InputError(f"{source} lacks key(s) {missing}")
        return typed(cls, data, source)


@with_config(_JSON_FIELDS)
@dataclass(frozen=True)
class MeasuredProfile:
    """The fields of a ``sdlaws measure hardware`` profile that the planner reads (other keys are ignored)."""

    gpu_name: str
    memory_bytes: float
    matmul_flops_per_s: float
    hbm_bytes_per_s: float
    launch_overhead_s: float
    graph_launch_overhead_s: float | None = None
    interconnect_bytes_per_s: float = 0.0
    dtype: str = "bfloat16"


def typed(cls: type[_T], data: dict[str, Any], source: str) -> _T:
    """The dataclass ``cls`` built from a JSON object, each value validated against its field's annotation by
    pydantic in strict JSON mode (``"989e12"``, ``true`` or ``NaN`` for a number are refused).

    Raises
    ------
    InputError
        One line naming ``source``, the first bad field, what it should be and what it is.
    """
    try:
        return TypeAdapter(cls).validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(map(str, error["loc"])) or "the object"
        got = f", got {error['input']!r}" if error["loc"] else ""
        raise InputError(f"{source}: {field}: {error['msg'].lower()}{got}; fix the JSON (see "
                         f"sdlaws.hardware.{cls.__name__})") from None


def _preset(name, bf16, fp8, hbm, mem_gib, link, source, hbm_eff=DEFAULT_HBM_EFFICIENCY) -> Hardware:
    """Preset with the default FLOP efficiency and launch cost (sizes in GiB)."""
    return Hardware(name=name, peak_bf16_flops_per_s=bf16, peak_fp8_flops_per_s=fp8, hbm_bytes_per_s=hbm,
                    memory_bytes=mem_gib * GIB, interconnect_bytes_per_s=link, hbm_efficiency=hbm_eff,
                    source=source)


PRESETS: dict[str, Hardware] = {h.name: h for h in [
    # NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense (624 sparse), HBM2 1,555 GB/s, 40GB,
    # NVLink 600 GB/s. No FP8.
    _preset("A100-40GB", 312e12, None, 1.555e12, 40, 600e9, "NVIDIA A100 datasheet (SXM4 40GB)"),
    # Same datasheet, 80GB SXM4: HBM2e 2,039 GB/s.
    _preset("A100-80GB", 312e12, None, 2.039e12, 80, 600e9, "NVIDIA A100 datasheet (SXM4 80GB)"),
    # NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 1,979 / FP8 3,958 TFLOPS "with sparsity" -> 989 / 1,979
    # dense; 3.35 TB/s; 80GB; NVLink 900 GB/s. (LLM-Viewer uses 3,072 GB/s, GenZ 3,400: docs/peers.md.)
    _preset("H100-SXM", 989e12, 1979e12, 3.35e12, 80, 900e9, "NVIDIA H100 datasheet (SXM)", H100_HBM_EFFICIENCY),
    # Same datasheet, PCIe: BF16 1,513 / FP8 3,026 sparse -> 756 / 1,513 dense; 2 TB/s; NVLink bridge 600 GB/s.
    _preset("H100-PCIe", 756e12, 1513e12, 2.0e12, 80, 600e9, "NVIDIA H100 datasheet (PCIe)", H100_HBM_EFFICIENCY),
    # NVIDIA H200 Tensor Core GPU datasheet, SXM: BF16 1,979 / FP8 3,958 sparse -> 989 / 1,979 dense;
    # 141GB HBM3e at 4.8 TB/s; NVLink 900 GB/s (inference-sim PR #1710 uses the same: docs/peers.md).
    _preset("H200", 989e12, 1979e12, 4.8e12, 141, 900e9, "NVIDIA H200 datasheet (SXM)"),
    # NVIDIA DGX/HGX B200 datasheets, per GPU = system / 8: FP16/BF16 36 PFLOPS and FP8 72 PFLOPS "with sparsity"
    # -> 2.25 / 4.5 PFLOPS dense; 1,440GB and 64 TB/s -> 180GB and 8 TB/s; NVLink 5 1.8 TB/s.
    # (The B200 package has 192GB physical HBM3e; 180GB is what the system datasheet exposes.)
    _preset("B200", 2.25e15, 4.5e15, 8.0e12, 180, 1.8e12, "NVIDIA DGX B200 datasheet (per GPU = system / 8)"),
    # NVIDIA L40S datasheet: BF16 733 / FP8 1,466 TFLOPS with sparsity -> 362 / 733 dense; 48GB GDDR6 864 GB/s;
    # no NVLink, PCIe Gen4 x16 64 GB/s.
    _preset("L40S", 362.05e12, 733e12, 864e9, 48, 64e9, "NVIDIA L40S datasheet"),
    # NVIDIA L4 datasheet: BF16 242 / FP8 485 TFLOPS with sparsity -> 121 / 242.5 dense; 24GB 300 GB/s;
    # PCIe Gen4 x16 64 GB/s.
    _preset("L4", 121e12, 242.5e12, 300e9, 24, 64e9, "NVIDIA L4 datasheet"),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: BF16 tensor with FP32 accumulate 165.2 dense
    # (330.4 sparse), FP8 with FP32 accumulate 330.3 dense; 24GB GDDR6X 1,008 GB/s; PCIe Gen4 x16 64 GB/s.
    _preset("RTX-4090", 165.2e12, 330.3e12, 1.008e12, 24, 64e9, "NVIDIA Ada Lovelace whitepaper (RTX 4090)"),
    # AMD Instinct MI300X data sheet: BF16 1,307.4 / FP8 2,614.9 TFLOPS dense (2x with sparsity); 192GB HBM3
    # 5.3 TB/s; 7 Infinity Fabric links x 128 GB/s = 896 GB/s.
    _preset("MI300X", 1307.4e12, 2614.9e12, 5.3e12, 192, 896e9, "AMD Instinct MI300X data sheet"),
]}

#: Extra spellings (after normalisation: lower case, no spaces, dashes, underscores or dots).
ALIASES: dict[str, str] = {
    "a100": "A100-80GB", "a10040g": "A100-40GB", "a10080g": "A100-80GB", "a100sxm": "A100-80GB",
    "h100": "H100-SXM", "h100pcie": "H100-PCIe", "h100sxm5": "H100-SXM", "h200sxm": "H200",
    "4090": "RTX-4090", "rtx4090": "RTX-4090", "geforcertx4090": "RTX-4090", "mi300": "MI300X",
}

# gpu_name substrings (normalised) -> preset, checked in order (l40s before l4, pcie before plain h100).
_GPU_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"h100.*pcie", "H100-PCIe"), (r"h100", "H100-SXM"), (r"h200", "H200"), (r"b200", "B200"),
    (r"l40s", "L40S"), (r"l4(?!\d)", "L4"), (r"4090", "RTX-4090"), (r"mi300x", "MI300X"),
]


def _normalise(name: str) -> str:
    """Lower case without spaces, dashes, underscores or dots, for name matching."""
    return re.sub(r"[\s_\-.]", "", str(name).lower())


def get_preset(name: str) -> Hardware:
    """Look up a preset by name, case/space/dash-insensitive, with aliases (``h100`` -> ``H100-SXM``).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the presets.
    """
    key = _normalise(name)
    by_key = {_normalise(n): n for n in PRESETS}
    by_key.update(ALIASES)
    if key in by_key:
        return PRESETS[by_key[key]]
    raise ConfigError(f"unknown hardware {name!r}; use a preset ({', '.join(PRESETS)}) or a JSON profile path")


def match_preset(gpu_name: str, memory_bytes: float | None = None) -> Hardware | None:
    """Preset whose name matches a device name such as ``'NVIDIA H100 80GB HBM3'`` (None if none does)."""
    key = _normalise(gpu_name)
    if "a100" in key:
        # A100 comes in 40 and 80 GB; the device name may not say which, the memory size does.
        big = "80g" in key or (memory_bytes is not None and memory_bytes > 60 * GIB)
        return PRESETS["A100-80GB" if big else "A100-40GB"]
    for pattern, preset in _GPU_NAME_PATTERNS:
        if re.search(pattern, key):
            return PRESETS[preset]
    return None


#: Keys a ``sdlaws measure hardware`` profile must have.
PROFILE_KEYS = ("gpu_name", "memory_bytes", "matmul_flops_per_s", "hbm_bytes_per_s", "launch_overhead_s")


def from_measured_profile(profile: dict[str, Any], source: str = "measured profile") -> Hardware:
    """Build a :class:`Hardware` from a ``sdlaws measure hardware`` JSON dict.

    The preset matching ``gpu_name`` supplies the peaks; efficiencies become measured / peak. Without a match
    the measured rates are used as peaks with efficiency 1.

    Parameters
    ----------
    profile : dict
        Keys :data:`PROFILE_KEYS` (extra keys are ignored): achieved BF16/FP16 matmul FLOP/s, achieved HBM
        bytes/s, per-kernel launch overhead in seconds. When the profile also has ``graph_launch_overhead_s``
        (per kernel inside a CUDA graph), that one is used: serving engines replay decode steps as CUDA graphs.
    source : str
        Recorded in ``Hardware.source``.
    """
    missing = [k for k in PROFILE_KEYS if k not in profile]
    if missing:
        raise InputError(f"{source}: hardware profile lacks {missing}; re-run `sdlaws measure hardware` "
                         "or write a full Hardware dict (see sdlaws.hardware.Hardware)")
    measured = typed(MeasuredProfile, profile, source)
    dtype = measured.dtype.replace("torch.", "")
    if dtype not in ("bfloat16", "float16", "bf16", "fp16"):
        raise InputError(f"{source}: matmul was measured in {dtype}; the planner compares it with the BF16 peak, "
                         "so measure with --dtype bfloat16")
    launch_s = measured.launch_overhead_s if measured.graph_launch_overhead_s is None \
        else measured.graph_launch_overhead_s
    preset = match_preset(measured.gpu_name, measured.memory_bytes)
    if preset is None:
        return Hardware(name=measured.gpu_name, peak_bf16_flops_per_s=measured.matmul_flops_per_s,
                        peak_fp8_flops_per_s=None, hbm_bytes_per_s=measured.hbm_bytes_per_s,
                        memory_bytes=measured.memory_bytes, interconnect_bytes_per_s=measured.interconnect_bytes_per_s,
                        flops_efficiency=1.0, hbm_efficiency=1.0, launch_overhead_s=launch_s,
                        source=f"{source} (no preset matched: measured rates used as peaks)")
    return replace(preset, memory_bytes=measured.memory_bytes,
                   flops_efficiency=measured.matmul_flops_per_s / preset.peak_bf16_flops_per_s,
                   hbm_efficiency=measured.hbm_bytes_per_s / preset.hbm_bytes_per_s, launch_overhead_s=launch_s,
                   source=f"{source}, peaks from {preset.name} preset ({preset.source})")


def load_hardware(spec: str | Path | Hardware) -> Hardware:
    """Resolve ``--hardware``: a :class:`Hardware`, a preset name, or a JSON path.

    A JSON file is either a full :meth:`Hardware.to_dict` dict or a measured profile (:data:`PROFILE_KEYS`).

    Raises
    ------
    ConfigError
        Unknown preset name.
    InputError
        Unreadable or incomplete JSON.
    """
    if isinstance(spec, Hardware):
        return spec
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        from sdlaws.io import load_json

        data = load_json(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object with hardware keys")
        if "peak_bf16_flops_per_s" in data:
            return Hardware.from_dict(data, source=str(path))
        return from_measured_profile(data, source=str(path))
    return get_preset(str(spec))

