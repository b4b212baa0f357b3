"""Rows timed with a known engine defect are set aside by its estimated cost, and only those."""

import pandas as pd

from sdlaws import defects
from sdlaws.roofline import named_shape

DRAFT = "random:llama-3.2-1b"  # LM head 128256 x 2048 bf16: 525 MB


def _rows(**overrides) -> pd.DataFrame:
    base = dict(git_sha="8fe13df", method="chain", draft_kind="lm", draft_name=DRAFT, batch_size=64,
                total_time_s=1.2, prefill_time_s=0.2, num_steps=100)   # 10 ms per decode step
    return pd.DataFrame([{**base, **overrides}])


def _share(**overrides) -> float:
    return float(defects.lm_head_share(_rows(**overrides), {DRAFT: named_shape(DRAFT)}, 4e12).iloc[0])


def test_share_is_the_extra_lm_head_reads_over_the_step():
    head = 128256 * 2048 * 2
    assert abs(_share() - 63 * head / 4e12 / 0.01) < 1e-9   # B - 1 extra reads over a 10 ms step
    assert _share(batch_size=1) == 0.0                       # one row reads the weight once either way


def test_unaffected_rows_are_never_touched():
    assert _share(git_sha="b665019") == 0.0                  # a version without the defect
    assert _share(git_sha="405b6d6abc") == 0.0               # the fix
    assert _share(draft_kind="head") == 0.0                  # heads re-read through a gather
    assert _share(method="ar", draft_name=None) == 0.0
    no_columns = _rows().drop(columns=["git_sha", "draft_kind"])   # ingests and older CSVs
    assert float(defects.lm_head_share(no_columns, {DRAFT: named_shape(DRAFT)}, 4e12).iloc[0]) == 0.0


def test_set_aside_splits_at_the_threshold():
    rows = pd.concat([_rows(), _rows(batch_size=1), _rows(git_sha="c3d041ccd621", batch_size=2, total_time_s=100.2)])
    kept, aside = defects.set_aside(rows, {DRAFT: named_shape(DRAFT)}, 4e12)
    assert list(kept["batch_size"]) == [1, 2] and list(aside["batch_size"]) == [64]   # b=2: 0.13 ms of 1 s
    assert aside["defect_share"].iloc[0] > defects.MAX_SHARE and "405b6d6" in aside["reason"].iloc[0]


def test_a_configuration_measured_again_after_the_fix_replaces_the_affected_row():
    cheap = dict(batch_size=2, total_time_s=100.2)                    # share far below the threshold
    rows = pd.concat([_rows(run_id="a", **cheap), _rows(run_id="a", git_sha="97b74118ed5f", **cheap),
                      _rows(run_id="b", **cheap), _rows(run_id="c", git_sha="b665019", **cheap)])
    kept, aside = defects.set_aside(rows, {DRAFT: named_shape(DRAFT)}, 4e12)
    assert list(zip(kept["run_id"], kept["git_sha"])) == [("a", "97b74118ed5f"), ("b", "8fe13df"), ("c", "b665019")]
    assert list(aside["run_id"]) == ["a"] and "measured again" in aside["reason"].iloc[0]
    assert aside["remeasured"].tolist() == [True]


def test_the_step_rates_come_from_rates(spec_row):
    """The decode step and the draft seconds per drafted position are derived in ``sdlaws.rates``."""
    from sdlaws import rates

    row = pd.DataFrame([spec_row(total_time_s=3.0, prefill_time_s=1.0, num_steps=40, draft_time_s=0.8,
                                 verify_time_s=1.0, num_spec_tokens=4)])
    out = rates.derive(row)
    assert out["decode_step_s"].iloc[0] == 0.05 and out["draft_s_per_position"].iloc[0] == 0.8 / 160
    assert out["cost_ratio_c"].iloc[0] == (0.8 / 160) / (1.0 / 40)
