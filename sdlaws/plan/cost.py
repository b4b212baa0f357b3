"""Step-time law: seconds of one forward pass, fitted to measured ``step`` tables, with the roofline as its prior.

One pass of ``B`` rows, each feeding ``n`` new tokens over ``c`` cached tokens, is a fixed number of kernels
whose costs add up (they run one after another on one stream)::

    time_s = fixed_s + layer_s * L
             + sum over GEMMs g of  smax(bytes_g / bw, flops_g / (rate * M / (M + m_half)))
             + smax(attention_bytes_factor * kv_bytes / bw, attention_flops / attention_rate)
             + elementwise_factor * activation_bytes / bw

- GEMMs: per layer QKV, output, gate-up and down projections (``L`` times) and the LM head (once), each with
  ``M = B * n`` rows; bytes = weights + input and output activations, flops = ``2 M N K``. The matmul rate
  grows with ``M`` (small GEMMs leave tensor cores idle: tile quantisation) and saturates at ``rate``.
- ``smax(a, b) = (a^p + b^p)^(1/p)``: a smooth maximum; the measured surface bends gradually from the
  memory-bound to the compute-bound regime rather than at the roofline's kink.
- attention reads the KV cache of every row (``B * (c + n)`` tokens) at a fitted share of the bandwidth, and
  does ``4 L H d B n (c + (n + 1) / 2)`` FLOPs; element-wise kernels move ``~ 2 L M (hidden + intermediate)``
  activation bytes.

The nine parameters are one GPU's (they transfer across model shapes); they are fitted by least squares on log
time (relative error) with a weak prior around datasheet values (``Hardware`` peaks x typical efficiencies), so
that directions no row constrains (e.g. the matmul rate from batch-1 rows only) stay at the prior.

On top of the law, each measured model keeps a *residual surface*: the log-residuals of its own table,
interpolated over (log2 batch, log2 tokens per row, log2 KV length) by a thin-plate spline
(``scipy.interpolate.RBFInterpolator``). Inside the measured box it corrects the law to the table; outside it
the residual is held at the box's edge and the prediction is flagged ``extrapolated``. Shapes that were not
measured get the law alone. The tables enter the parameters' fit, so they time one code path: the engine's fused
forward (:mod:`sdlaws.measure.fastpath`, draft heads included; with or without its Triton kernels,
``forward_impl`` "fused-triton" or "fused", not both), whose kernels the law counts, or stock Hugging Face layers
alone (``forward_impl`` "hf", a model the fast path does not cover); stock-layer rows beside fused ones are
refused, and given as ``surface_only`` they get their surface over the law without entering the fit. See
``docs/cost-model.md`` for the validation (leave-one-point-out, leave-one-batch-size-out, leave-one-shape-out, and
transfer across GPUs).

One module because the law's terms, its fit, its residual surface and its result object are one
model; the checks on it live in :mod:`sdlaws.plan.costcheck`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdlaws.dtypes import dtype_bytes
from sdlaws.errors import InputError
from sdlaws.hardware import Hardware
from sdlaws.calibration import ok_step_rows
from sdlaws.roofline import ModelShape, kv_bytes_per_token, named_shape, peak_flops_per_s

#: Parameter names, units in the names; all positive, fitted on the log scale.
PARAMS = ("hbm_bytes_per_s", "matmul_flops_per_s", "gemm_half_rows", "smooth_p", "attention_bytes_factor",
          "attention_flops_per_s", "fixed_s", "layer_s", "elementwise_factor")

#: Prior centre as (factor of the datasheet value or an absolute value) and (lower, upper) bounds factors.
#: Efficiencies 0.8 (HBM) and 0.7 (matmul) are the roofline defaults (sdlaws.hardware); the rest are loose.
_PRIOR_SD = 1.0        # prior sd of each log-parameter: a factor e either way
_PRIOR_WEIGHT = 0.05   # prior residual weight next to the data's log-residuals (one row ~ weight 1)
_SURFACE_SMOOTHING = 1e-3  # thin-plate smoothing of a residual surface (log-time units squared per point)
_Z95 = 1.959963984540054


def prior(hw: Hardware, dtype: str = "bfloat16") -> pd.Series:
    """Prior centre of the parameters for one GPU: datasheet peaks x typical efficiencies."""
    peak = peak_flops_per_s(hw, dtype)
    return pd.Series({"hbm_bytes_per_s": 0.8 * hw.hbm_bytes_per_s, "matmul_flops_per_s": 0.7 * peak,
                      "gemm_half_rows": 64.0, "smooth_p": 4.0, "attention_bytes_factor": 1.5,
                      "attention_flops_per_s": 0.3 * peak, "fixed_s": 2e-5, "layer_s": 2e-5,
                      "elementwise_factor": 1.0})


def _bounds(centre: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Log bounds: rates within 0.05-2x their prior, p in [1.2, 30], the rest within 1e-3-1e3x."""
    lo, hi = np.log(centre.to_numpy() * 1e-3), np.log(centre.to_numpy() * 1e3)
    for name in ("hbm_bytes_per_s", "matmul_flops_per_s", "attention_flops_per_s"):
        i = PARAMS.index(name)
        lo[i], hi[i] = np.log(centre[name] * 0.05), np.log(centre[name] * 2.0)
    i = PARAMS.index("smooth_p")
    lo[i], hi[i] = np.log(1.2), np.log(30.0)
    return lo, hi


# ----------------------------------------------------------------------------------------------- features


def _gemms(shape: ModelShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, N, count)`` of the GEMMs of one pass: 4 per layer, the LM head, and a draft head's input projection
    (``fc_in -> hidden``, count 0 for plain decoders)."""
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    inter = shape.intermediate or _intermediate(shape, q_dim, kv_dim)
    k = np.array([shape.hidden, q_dim, shape.hidden, inter, shape.hidden, max(shape.fc_in, 1)], dtype=float)
    n = np.array([q_dim + 2 * kv_dim, shape.hidden, 2 * inter, shape.hidden, max(shape.vocab, 1), shape.hidden],
                 dtype=float)
    count = np.array([shape.layers] * 4 + [1, 1 if shape.fc_in else 0], dtype=float)
    return k, n, count


def _intermediate(shape: ModelShape, q_dim: int, kv_dim: int) -> float:
    """MLP width implied by the parameter count when the shape does not state it (gated MLP)."""
    embed = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    per_layer = (shape.params - embed) / shape.layers - shape.hidden * (2 * q_dim + 2 * kv_dim)
    return max(per_layer / (3 * shape.hidden), 1.0)


@dataclass(frozen=True)
class Workload:
    """What the law needs of a set of passes of one shape (arrays over passes)."""

    gemm_bytes: np.ndarray      # (G, P) weight + activation bytes per GEMM
    gemm_flops: np.ndarray      # (G, P)
    gemm_count: np.ndarray      # (G,) GEMMs of that size per pass
    rows: np.ndarray            # (P,) M = batch x tokens per row
    kv_bytes: np.ndarray        # (P,) KV cache bytes read
    attention_flops: np.ndarray  # (P,)
    activation_bytes: np.ndarray  # (P,) element-wise traffic
    layers: float


def workload(shape: ModelShape, batch_size, tokens_per_row, kv_len, dtype: str = "bfloat16") -> Workload:
    """Bytes and FLOPs of passes of ``shape`` at ``(batch_size, tokens_per_row, kv_len)`` (broadcast arrays)."""
    b, n, c = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)) for v in
                                    (batch_size, tokens_per_row, kv_len)))
    size = dtype_bytes(dtype)
    rows = b * n
    k, nn, count = _gemms(shape)
    gemm_bytes = size * (k[:, None] * nn[:, None] + rows[None] * (k[:, None] + nn[:, None]))
    gemm_flops = 2.0 * rows[None] * k[:, None] * nn[:, None]
    kv = b * (c + n) * kv_bytes_per_token(shape, dtype)
    attention = 4.0 * shape.layers * shape.heads * shape.head_dim * rows * (c + (n + 1.0) / 2.0)
    inter = shape.intermediate or _intermediate(shape, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim)
    activation = 2.0 * size * shape.layers * rows * (shape.hidden + inter)
    return Workload(gemm_bytes, gemm_flops, count, rows, kv, attention, activation, float(shape.layers))


def _smax(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    """Smooth maximum ``(a^p + b^p)^(1/p)``, computed stably."""
    top = np.maximum(a, b)
    return top * ((a / top) ** p + (b / top) ** p) ** (1.0 / p)


def law_time_s(params: pd.Series | dict, work: Workload) -> np.ndarray:
    """Seconds of each pass of ``work`` under the law (module docstring) with ``params``."""
    p = {k: float(params[k]) for k in PARAMS}
    rate = p["matmul_flops_per_s"] * work.rows / (work.rows + p["gemm_half_rows"])
    gemm = _smax(work.gemm_bytes / p["hbm_bytes_per_s"], work.gemm_flops / rate[None], p["smooth_p"])
    attention = _smax(p["attention_bytes_factor"] * work.kv_bytes / p["hbm_bytes_per_s"],
                      work.attention_flops / p["attention_flops_per_s"], p["smooth_p"])
    return (p["fixed_s"] + p["layer_s"] * work.layers + (work.gemm_count[:, None] * gemm).sum(axis=0) + attention
            + p["elementwise_factor"] * work.activation_bytes / p["hbm_bytes_per_s"])


# ----------------------------------------------------------------------------------------------- data


#: ``L<layers>-H<hidden>`` in the path of a model trained by ``sdlaws train``.
_TRAINED = re.compile(r"L(\d+)-H(\d+)")


def short_name(model_name) -> str:
    """``L12-H768`` of an sdlaws-trained model's path (labels of tables and figures), else the name itself."""
    match = _TRAINED.search(str(model_name))
    return match[0] if match else str(model_name)


def step_shape(model_name: str, params: float | None = None) -> ModelShape:
    """Shape of a row's model: a registered or named shape (``random:llama-3.1-8b``), or a model trained by
    ``sdlaws train`` (``.../L12-H768-T50M-s0/step-N``: heads and MLP width are the trainer's defaults, embeddings
    tied, the vocabulary solved from the row's parameter count ``params``).

    Raises
    ------
    InputError
        The model is not a known shape (the law needs its architecture, not only its parameter count).
    """
    from sdlaws.errors import ConfigError

    try:
        return named_shape(model_name)
    except ConfigError:
        pass
    match = _TRAINED.search(str(model_name))
    if match is None or not params:
        raise InputError(f"rows of {model_name!r}: unknown architecture; the step-time law needs a named or "
                         "random: shape (sdlaws.shapes.SHAPES) or an sdlaws-trained model with its parameter count")
    return trained_shape(int(match[1]), int(match[2]), float(params), name=match[0])


def trained_shape(layers: int, hidden: int, params: float, name: str) -> ModelShape:
    """Shape of an ``sdlaws train`` model (:class:`sdlaws.train.families.TrainSpec` defaults: heads of 64, SwiGLU
    8/3 hidden rounded up to 32, tied embeddings) whose vocabulary makes up the rest of ``params``."""
    heads = max(1, hidden // 64)
    inter = -(-int(8 * hidden / 3) // 32) * 32
    body = ModelShape.from_hf_config(dict(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, num_key_value_heads=heads,
                                          intermediate_size=inter, vocab_size=0, tie_word_embeddings=True)).params
    vocab = max(1, round((params - body) / hidden))
    return ModelShape.from_hf_config(dict(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=inter,
                                          vocab_size=vocab, tie_word_embeddings=True), name=name)


def shape_key(shape: ModelShape) -> tuple:
    """The architecture of a shape, without its name: a measured table serves every name of the same shape."""
    return (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.vocab, shape.tied,
            shape.intermediate, shape.fc_in)


def _ok_steps(step_df: pd.DataFrame) -> pd.DataFrame:
    """Ok rows of one device, enough to fit the law's parameters."""
    return ok_step_rows(step_df, len(PARAMS), "the step-time law")


def _coords(batch_size, tokens_per_row, kv_len) -> np.ndarray:
    """``(P, 3)`` surface coordinates: log2 of batch, tokens per row and KV length."""
    return np.log2(np.column_stack([np.atleast_1d(np.asarray(v, dtype=float)) for v in
                                    np.broadcast_arrays(batch_size, tokens_per_row, kv_len)]))


# ----------------------------------------------------------------------------------------------- surfaces


@dataclass(frozen=True)
class Surface:
    """Log-residuals of one measured shape's table, interpolated (thin-plate spline) over its measured box."""

    coords: np.ndarray    # (P, 3) log2 batch, tokens per row, KV length of the measured points
    residual: np.ndarray  # (P,) log(measured / law)

    @property
    def varying(self) -> np.ndarray:
        """Coordinates that take more than one value (a constant one carries no interpolation)."""
        return np.ptp(self.coords, axis=0) > 0

    @cached_property
    def _spline(self):
        """The thin-plate spline over the varying coordinates (built once: plans query it for every pass), or
        None when there is nothing to interpolate."""
        from scipy.interpolate import RBFInterpolator

        dims = self.varying
        if not dims.any() or len(self.residual) < 3:
            return None
        degree = 1 if len(self.residual) > dims.sum() + 1 else 0
        return RBFInterpolator(self.coords[:, dims], self.residual, kernel="thin_plate_spline",
                               smoothing=_SURFACE_SMOOTHING * len(self.residual), degree=degree)

    def __call__(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residual at ``coords`` ``(Q, 3)`` and whether each query lies outside the measured box."""
        lo, hi = self.coords.min(axis=0), self.coords.max(axis=0)
        outside = ((coords < lo - 1e-9) | (coords > hi + 1e-9)).any(axis=1)
        if self._spline is None:
            return np.full(len(coords), float(np.mean(self.residual))), outside
        return self._spline(np.clip(coords, lo, hi)[:, self.varying]), outside


# ----------------------------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class StepTimeFit:
    """A fitted step-time law for one GPU, with the residual surfaces of the shapes it was fitted on.

    Attributes
    ----------
    gpu_name : str
    params : pandas.Series
        Fitted parameters (:data:`PARAMS`).
    log_cov : numpy.ndarray
        Covariance of the log-parameters (Gauss-Newton, scaled by the residual variance).
    prior : pandas.Series
        Prior centre (datasheet x efficiencies) the fit was regularised towards.
    residuals : pandas.DataFrame
        One row per fitted step timing: ``model_name``, inputs, ``measured_s``, ``law_s`` (law alone).
    surfaces : dict
        ``shape_key -> Surface`` of each measured shape.
    shapes : dict
        ``model_name -> ModelShape`` of the fitted tables.
    source : str
        What the parameters come from (fitted rows, or a transfer from another GPU).
    """

    gpu_name: str
    params: pd.Series
    log_cov: np.ndarray = field(repr=False)
    prior: pd.Series = field(repr=False)
    residuals: pd.DataFrame = field(repr=False)
    surfaces: dict = field(repr=False, default_factory=dict)
    shapes: dict = field(repr=False, default_factory=dict)
    source: str = ""

    # -- prediction

    def law_s(self, shape: ModelShape | str, batch_size, tokens_per_row, kv_len) -> np.ndarray:
        """Seconds of a pass under the law alone (no residual surface)."""
        shape = step_shape(shape) if isinstance(shape, str) else shape
        return law_time_s(self.params, workload(shape, batch_size, tokens_per_row, kv_len))

    def predict(self, shape: ModelShape | str, batch_size, tokens_per_row, kv_len, *,
                surface: bool = True) -> pd.DataFrame:
        """Predicted seconds of passes of ``shape`` with a 95% prediction interval.

        Returns
        -------
        DataFrame
            ``batch_size``, ``tokens_per_row``, ``kv_len``, ``time_s``, ``lower_s``, ``upper_s``, ``measured_shape``
            (the shape has a table on this GPU), ``extrapolated`` (outside that table's box, or no table).
        """
        coords = _coords(batch_size, tokens_per_row, kv_len)
        log_t, outside, measured = self._log_time(shape, coords, surface)
        spread = _Z95 * self.log_sd(measured=measured)
        b, n, c = (2.0 ** coords).T
        return pd.DataFrame({"batch_size": np.rint(b).astype(int), "tokens_per_row": np.rint(n).astype(int),
                             "kv_len": np.rint(c).astype(int), "time_s": np.exp(log_t),
                             "lower_s": np.exp(log_t - spread), "upper_s": np.exp(log_t + spread),
                             "measured_shape": measured, "extrapolated": outside})

    def time_s(self, shape: ModelShape | str, batch_size, tokens_per_row, kv_len) -> np.ndarray:
        """Predicted seconds (law + the shape's residual surface when it has one); the planner's hot path, so no
        interval or table is built."""
        return np.exp(self._log_time(shape, _coords(batch_size, tokens_per_row, kv_len), True)[0])

    def _log_time(self, shape: ModelShape | str, coords: np.ndarray, surface: bool):
        """Log seconds at ``coords`` ``(Q, 3)``, whether each lies outside the measured box, whether the shape
        has a table."""
        shape = step_shape(shape) if isinstance(shape, str) else shape
        base = np.log(self.law_s(shape, *(2.0 ** coords.T)))
        table = self.surfaces.get(shape_key(shape)) if surface else None
        if table is None:
            return base, np.ones(len(coords), dtype=bool), False
        correction, outside = table(coords)
        return base + correction, outside, True

    def log_sd(self, *, measured: bool) -> float:
        """Spread of log time for prediction intervals: the surface's smoothing residual for measured shapes,
        the law's residual sd for others."""
        r = self.residuals
        if measured and "surface_s" in r:
            return float(np.std(np.log(r["measured_s"] / r["surface_s"]), ddof=1))
        return float(np.std(np.log(r["measured_s"] / r["law_s"]), ddof=1))

    # -- results API

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Parameter intervals (log-normal, from the Gauss-Newton covariance)."""
        from scipy.stats import norm

        z = norm.ppf(1 - alpha / 2)
        se = np.sqrt(np.diag(self.log_cov))
        log_p = np.log(self.params.to_numpy())
        return pd.DataFrame({"lower": np.exp(log_p - z * se), "upper": np.exp(log_p + z * se)}, index=self.params.index)

    def errors(self) -> pd.DataFrame:
        """In-sample percentage errors of the law alone and with the residual surfaces."""
        r = self.residuals
        out = {"law": 100 * (r["law_s"] / r["measured_s"] - 1)}
        if "surface_s" in r:
            out["law+surface"] = 100 * (r["surface_s"] / r["measured_s"] - 1)
        return pd.DataFrame(out)

    def summary(self) -> str:
        """Parameters with intervals and the in-sample errors."""
        ci = self.conf_int()
        lines = [f"Step-time law on {self.gpu_name} ({len(self.residuals)} step timings, "
                 f"{len(self.shapes)} shapes){'; ' + self.source if self.source else ''}"]
        for name, value in self.params.items():
            lines.append(f"  {name:<24} {value:11.4g}  [{ci.loc[name, 'lower']:.4g}, {ci.loc[name, 'upper']:.4g}]"
                         f"  prior {self.prior[name]:.4g}")
        for column, err in self.errors().items():
            lines.append(f"  in-sample |error| ({column}): median {err.abs().median():.2f}%, "
                         f"max {err.abs().max():.2f}%")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (parameters, covariance, prior, fitted rows); :func:`load_step_fit` reads it back."""
        return dict(kind="steptime", gpu_name=self.gpu_name, source=self.source, params=self.params.to_dict(),
                    log_cov=self.log_cov.tolist(), prior=self.prior.to_dict(),
                    shapes={name: s.to_dict() for name, s in self.shapes.items()},
                    residuals=self.residuals.to_dict(orient="list"))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        from sdlaws.io import save_json

        return save_json(self.to_dict(), path)

    def transfer(self, source: Hardware, target: Hardware, dtype: str = "bfloat16") -> "StepTimeFit":
        """The law moved to another GPU by datasheet ratios: bandwidth x HBM ratio, both FLOP rates x peak ratio.

        Fixed, per-layer and shape costs (``fixed_s``, ``layer_s``, the smoothing, the attention and element-wise
        factors, ``gemm_half_rows``) are kept; residual surfaces are dropped (they belong to the measured GPU).
        """
        ratio_bw = target.hbm_bytes_per_s / source.hbm_bytes_per_s
        ratio_flops = peak_flops_per_s(target, dtype) / peak_flops_per_s(source, dtype)
        params = self.params.copy()
        params["hbm_bytes_per_s"] *= ratio_bw
        params["matmul_flops_per_s"] *= ratio_flops
        params["attention_flops_per_s"] *= ratio_flops
        residuals = self.residuals.drop(columns=["surface_s"], errors="ignore")
        return replace(self, gpu_name=target.name, params=params, prior=prior(target, dtype), residuals=residuals,
                       surfaces={}, source=f"transferred from {self.gpu_name} by datasheet ratios "
                                           f"(HBM x{ratio_bw:.3g}, FLOP/s x{ratio_flops:.3g})")


def _workloads(rows: pd.DataFrame, shapes: dict[str, ModelShape], dtype: str) -> list[tuple[Workload, np.ndarray]]:
    """One :class:`Workload` per shape over its rows of ``rows`` (a default index), with those rows' positions."""
    return [(workload(shapes[name], *(rows[c].to_numpy()[pos] for c in ("batch_size", "tokens_per_row", "kv_len")),
                      dtype), pos) for name, pos in rows.groupby("model_name").indices.items()]


def _law_seconds(params, works: list[tuple[Workload, np.ndarray]], num_rows: int) -> np.ndarray:
    """The law's seconds for every row of the :func:`_workloads` ``works``."""
    out = np.empty(num_rows)
    for work, pos in works:
        out[pos] = law_time_s(params, work)
    return out


def _fit_params(rows: pd.DataFrame, shapes: dict[str, ModelShape], centre: pd.Series, dtype: str,
                start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares log-parameters and their covariance."""
    from scipy.optimize import least_squares

    rows = rows.reset_index(drop=True)
    works = _workloads(rows, shapes, dtype)
    log_measured = np.log(rows["median_time_s"].to_numpy(dtype=float))
    log_centre = np.log(centre.to_numpy())
    weight = _PRIOR_WEIGHT / _PRIOR_SD

    def resid(theta):
        law_s = _law_seconds(dict(zip(PARAMS, np.exp(theta))), works, len(rows))
        return np.concatenate([np.log(law_s) - log_measured, weight * (theta - log_centre)])

    lo, hi = _bounds(centre)
    starts = [log_centre] if start is None else [start]
    fits = [least_squares(resid, np.clip(s, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), x_scale="jac") for s in starts]
    best = min(fits, key=lambda f: f.cost)
    jac = best.jac[: len(rows)]
    dof = max(len(rows) - len(PARAMS), 1)
    sigma2 = float(np.sum(best.fun[: len(rows)] ** 2) / dof)
    info = jac.T @ jac + np.eye(len(PARAMS)) * weight**2
    return best.x, sigma2 * np.linalg.pinv(info)


def fit_steptime(step_df: pd.DataFrame, hw: Hardware, *, dtype: str = "bfloat16",
                 shapes: dict[str, ModelShape] | None = None,
                 surface_only: pd.DataFrame | None = None) -> StepTimeFit:
    """Fit the step-time law to measured ``step`` rows of one GPU (all shapes together) and build the residual
    surface of each shape.

    Parameters
    ----------
    step_df : DataFrame
        Rows of the ``step`` table (:data:`sdlaws.schema.STEP_TIMING`); failed rows are dropped.
    hw : Hardware
        The measured GPU's preset: its datasheet values centre the prior.
    shapes : dict, optional
        ``model_name -> ModelShape`` for models that are not registered shapes.
    surface_only : DataFrame, optional
        Step rows of passes whose kernels the law's terms do not count (e.g. a draft head timed while heads ran
        stock Hugging Face layers): their shapes get residual surfaces over the law without moving its parameters.

    Raises
    ------
    InputError
        No ok rows, rows of several GPUs, fewer rows than parameters, an unknown architecture, or a shape in both
        ``step_df`` and ``surface_only``.
    """
    fitted = _ok_steps(step_df)
    _check_one_path(fitted)
    extra = fitted.iloc[:0] if surface_only is None else ok_step_rows(surface_only, 1, "surface-only step rows")
    both = set(fitted["model_name"].astype(str)) & set(extra["model_name"].astype(str))
    if both:
        raise InputError(f"{sorted(both)} in both the fitted and the surface-only step tables; give each shape once")
    rows = _ok_steps(pd.concat([fitted, extra], ignore_index=True))  # one device and one tensor-parallel size
    on_law = np.arange(len(rows)) < len(fitted)
    names = rows["model_name"].astype(str)
    params = rows.groupby(names)["model_params"].first() if "model_params" in rows else {}
    shapes = {n: (shapes or {}).get(n) or step_shape(n, params.get(n)) for n in names.unique()}
    centre = prior(hw, dtype)
    rows = rows.assign(model_name=names).reset_index(drop=True)
    theta, cov = _fit_params(rows[on_law], shapes, centre, dtype)
    params_ = pd.Series(np.exp(theta), index=list(PARAMS))
    law_s = _law_seconds(params_, _workloads(rows, shapes, dtype), len(rows))
    residuals = rows[["model_name", "batch_size", "tokens_per_row", "kv_len"]].assign(
        measured_s=rows["median_time_s"].to_numpy(float), law_s=law_s)
    fit = StepTimeFit(gpu_name=str(rows["gpu_name"].iloc[0]) if "gpu_name" in rows else hw.name,
                      params=params_, log_cov=cov, prior=centre, residuals=residuals, shapes=shapes,
                      source=f"fitted on {len(fitted)} step timings"
                      + (f", {len(extra)} more with surfaces only" if len(extra) else ""))
    return _with_surfaces(fit)


def _check_one_path(rows: pd.DataFrame) -> None:
    """One code path per fit: the law's terms count one path's kernels, so rows timed on another beside them would
    bend the GPU parameters the shapes share. Stock Hugging Face layers (``forward_impl`` "hf") beside fused ones
    are refused and belong in ``surface_only``; the fast path with and without its Triton kernels
    ("fused-triton", "fused": other kernels per layer) are refused together; rows that record no path (tables
    written before it was recorded) are taken as they are. Rows of the stock path alone (a model the fast path
    does not cover) are fitted as they are: the parameters then describe that path."""
    known = rows["forward_impl"] if "forward_impl" in rows else pd.Series(dtype=object)
    known = known[known.notna() & known.astype(str).ne("")].astype(str)
    if known.nunique() < 2:
        return
    stock = known.eq("hf")
    if stock.any():
        names = sorted(rows.loc[known.index[stock], "model_name"].astype(str).unique())
        raise InputError(f"{int(stock.sum())} step rows of {names} were timed on stock Hugging Face layers "
                         "(forward_impl hf) beside fused-path rows, whose GPU parameters they would bend; give them "
                         "as surface-only tables (sdlaws validate --surface-steps)")
    counts = ", ".join(f"{n} rows {path}" for path, n in known.value_counts().sort_index().items())
    raise InputError(f"step rows timed on different code paths of the fast path ({counts}): the Triton attention "
                     "kernels change the kernels per layer the law counts; fit one path's tables, or measure the "
                     "others again with this engine (sdlaws measure hardware)")


def _with_surfaces(fit: StepTimeFit) -> StepTimeFit:
    """``fit`` with one residual surface per measured shape and the in-sample ``surface_s`` column."""
    r = fit.residuals
    surfaces, surface_s = {}, np.empty(len(r))
    for name, idx in r.groupby("model_name").groups.items():
        part = r.loc[idx]
        coords = _coords(part["batch_size"], part["tokens_per_row"], part["kv_len"])
        key = shape_key(fit.shapes[name])
        surfaces[key] = Surface(coords, np.log(part["measured_s"] / part["law_s"]).to_numpy())
        surface_s[r.index.get_indexer(idx)] = part["law_s"].to_numpy() * np.exp(surfaces[key](coords)[0])
    return replace(fit, surfaces=surfaces, residuals=r.assign(surface_s=surface_s))


def load_step_fit(path: str | Path) -> StepTimeFit:
    """Read a :meth:`StepTimeFit.save` JSON (surfaces are rebuilt from the stored rows)."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") != "steptime":
        raise InputError(f"{path}: not a step-time fit (kind={data.get('kind')!r}); write one with `sdlaws fit "
                         "--law steptime`")
    shapes = {name: ModelShape(**s) for name, s in data["shapes"].items()}
    residuals = pd.DataFrame(data["residuals"]).drop(columns=["surface_s"], errors="ignore")
    fit = StepTimeFit(gpu_name=data["gpu_name"], params=pd.Series(data["params"])[list(PARAMS)],
                      log_cov=np.asarray(data["log_cov"]), prior=pd.Series(data["prior"])[list(PARAMS)],
                      residuals=residuals, shapes=shapes, source=data.get("source", ""))
    return _with_surfaces(fit) if data.get("source", "").startswith("fitted") else fit


#: Datasheet-roofline error on committed step tables, written by ``sdlaws experiment cost-model``.
ROOFLINE_ERROR_FILE = Path(__file__).with_name("roofline_error.json")


def roofline_statement(hw: Hardware) -> str:
    """What a plan without step tables runs on, and how far that roofline was from measured step times."""
    head = (f"Cost model: datasheet roofline of {hw.name} (no --steps); measured step tables replace it with a "
            "fitted step-time law.")
    if not ROOFLINE_ERROR_FILE.exists():
        return head
    known = json.loads(ROOFLINE_ERROR_FILE.read_text())
    checks = [f"{gpu}: median {e['median_abs_pct']:.0f}%, max {e['max_abs_pct']:.0f}% over {e['rows']} step timings "
              f"of {e['shapes']} shapes" for gpu, e in known.items()]
    return f"{head} Its error on measured forward times ({'; '.join(checks)})."


def cost_model_set(law: StepTimeFit | None, hw: Hardware):
    """The plan's cost model as a PlanSet part: a statement of what it is and how well it fits."""
    from sdlaws.plan.result import PlanSet

    if law is None:
        return PlanSet(title="cost model", plans=(), inputs={"cost_model": {"kind": "roofline",
                                                                             "statement": roofline_statement(hw)}})
    err = law.errors()
    statement = (f"Cost model: step-time law fitted on {len(law.residuals)} step timings of {law.gpu_name} "
                 f"({', '.join(sorted(law.shapes))}); in-sample median |error| {err.iloc[:, -1].abs().median():.2f}% "
                 f"(law alone {err['law'].abs().median():.2f}%); shapes without a table use the law alone. "
                 f"Out-of-sample errors: docs/cost-model.md.")
    return PlanSet(title="cost model", plans=(), tables={"step_law_residuals": law.residuals},
                   inputs={"cost_model": {"kind": "steptime", "statement": statement,
                                          "params": law.params.to_dict(), "source": law.source}})
