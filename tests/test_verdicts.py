"""Conclusion rules of the generated documents, on inputs that flip each verdict; and the cost-model document
regenerated from the committed CSVs equals the committed one."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdlaws.experiments import verdicts

ROOT = Path(__file__).resolve().parents[1]


def test_goal_flips_at_the_limit():
    assert "meets the goal of at most 3%" in verdicts.goal(2.99, 3.0, "x")
    assert "meets" in verdicts.goal(3.0, 3.0, "x")
    assert "misses the goal of at most 3%" in verdicts.goal(3.01, 3.0, "x")


def test_share_goal_flips_at_the_share():
    assert "meets" in verdicts.share_goal(8, 10, 0.8, "x") and "at 8 of 10" in verdicts.share_goal(8, 10, 0.8, "x")
    assert "misses" in verdicts.share_goal(7, 10, 0.8, "x")
    assert "misses" in verdicts.share_goal(0, 0, 0.8, "x")


@pytest.mark.parametrize("p,lo,hi,batches,expected", [
    (0.5, 0.3, 0.7, 5, "consistent with B^(-1/2)"),
    (0.9, 0.7, 1.1, 5, "not like B^(-1/2)"),
    (0.2, -0.1, 0.5, 5, "no significant shrinkage"),
    (0.5, 0.3, 0.7, 2, "not testable"),
])
def test_topk_shrinkage_verdicts(p, lo, hi, batches, expected):
    assert expected in verdicts.topk_shrinkage(p, lo, hi, batches)


def test_stops_paying_finds_the_first_batch_from_which_ar_always_wins():
    b = np.array([1, 4, 16, 64])
    assert "from batch 16" in verdicts.stops_paying(b, np.array([1.4, 1.1, 0.9, 0.8]))
    assert "still pays" in verdicts.stops_paying(b, np.array([1.4, 1.1, 0.9, 1.02]))  # wins again at 64
    assert "does not pay at any" in verdicts.stops_paying(b, np.array([0.9, 0.9, 0.9, 0.9]))


def test_censored_batches_are_those_whose_optimum_is_the_largest_topk_measured():
    optimum = pd.DataFrame({"batch_size": [1, 1, 8, 8], "tree_topk": [32, 16, 4, 2], "topk_max": [32, 32, 16, 16]})
    assert verdicts.censored_batches(optimum) == [1]
    assert verdicts.censored_batches(optimum.assign(tree_topk=[16, 16, 4, 2])) == []


def test_cost_model_document_is_what_the_committed_csvs_give(tmp_path):
    from sdlaws.experiments.costmodel import analyse
    from sdlaws.experiments.costmodel_doc import render

    text = render(analyse(ROOT / "measurements"), tmp_path, root=ROOT / "measurements")
    assert text == (ROOT / "docs" / "cost-model.md").read_text()
