"""Acceptance models the planner searches over: per-depth x per-rank profiles under the engine's own tree policy,
and the number of decode steps a batch takes.

A profile ``q`` (the format of ``sdlaws measure --acceptance-profile`` and :func:`sdlaws.rates.acceptance_profile`)
gives, per draft depth ``d`` and sibling rank ``r``, the probability that the target's token at depth ``d`` is the
draft's rank-``r`` child of the accepted path node. :func:`engine_tree` builds the tree sdlaws's engine verifies
for such a draft (EAGLE-2 expansion: at each depth the ``k`` best nodes by cumulative draft log-probability
expand their top-``k`` children; then the ``budget`` best pool nodes are verified; ``sdlaws.measure.tree``), with
the draft's log-probabilities equal to ``log q`` as in the engine's synthetic mode. A node is accepted when
every edge on its path is, so ``P(walk reaches depth j) = sum over selected depth-j nodes of prod q`` and the
accepted-length distribution follows. Chains are the case ``k = 1``.

:func:`batch_steps` turns an accepted-length distribution into decode steps per batch: a static batch runs until
its slowest row has ``max_new_tokens`` (expected maximum over rows, exactly from each row's distribution of
finishing steps, :func:`finish_cdf`); continuous batching refills finished rows, so a row costs its own expected
steps.
"""

from __future__ import annotations

import heapq

from dataclasses import dataclass

import numpy as np

#: Floor of a probability before its log (ranks with no probability still get a finite draft score).
_MIN_Q = 1e-9


def profile_array(profile, depth: int, topk: int) -> np.ndarray:
    """``(depth, topk)`` array of ``q``; ranks past a row's end and depths past the profile are 0."""
    out = np.zeros((depth, topk))
    for d, row in enumerate(list(profile)[:depth]):
        width = min(len(row), topk)
        out[d, :width] = np.asarray(row, dtype=float)[:width]
    return out


@dataclass(frozen=True)
class EngineTree:
    """The verified nodes of one step: depth (1-based) and path acceptance probability of each selected node."""

    depth: np.ndarray  # (budget,)
    prob: np.ndarray   # (budget,) product of q along the node's path

    def reach(self, max_depth: int) -> np.ndarray:
        """``(max_depth + 1,)`` P(the walk accepts at least j drafts), j = 0..max_depth."""
        out = np.ones(max_depth + 1)
        for j in range(1, max_depth + 1):
            out[j] = self.prob[self.depth == j].sum()
        return np.minimum(out, 1.0)

    def length_pmf(self, max_depth: int) -> np.ndarray:
        """``(max_depth + 1,)`` P(exactly j drafts accepted)."""
        reach = self.reach(max_depth)
        return np.clip(reach - np.append(reach[1:], 0.0), 0.0, 1.0)

    @property
    def tau(self) -> float:
        """Expected tokens per step: accepted drafts + the bonus token."""
        return 1.0 + float(self.prob.sum())


def engine_tree(profile, topk: int, depth: int, budget: int | None = None) -> EngineTree:
    """The tree the engine verifies for a draft whose log-probabilities are ``log q`` (module docstring).

    Mirrors ``sdlaws.measure.tree.grow`` / ``select``: pool laid out ``[frontier][rank]`` per depth, the next
    frontier the ``k`` best children, the ``budget`` (default ``k * depth``) best pool nodes by score with ties
    to the earlier node.
    """
    budget = topk * depth if budget is None else budget
    q = profile_array(profile, depth, topk)
    logq = np.log(np.maximum(q, _MIN_Q))
    score, prob, node_depth = list(logq[0]), list(q[0]), [1] * topk
    frontier = list(range(topk))
    for level in range(1, depth):
        start = len(score)
        child_score = [score[f] + logq[level, r] for f in frontier for r in range(topk)]
        child_prob = [prob[f] * q[level, r] for f in frontier for r in range(topk)]
        score += child_score
        prob += child_prob
        node_depth += [level + 1] * len(child_score)
        best = np.argsort(-np.asarray(child_score), kind="stable")[:topk]
        frontier = [start + int(i) for i in best]
    order = np.argsort(-np.asarray(score), kind="stable")[:budget]
    return EngineTree(depth=np.asarray(node_depth)[order], prob=np.asarray(prob)[order])


def prompt_profiles(profile, spread: float | None, bins: int = 16) -> list:
    """Profiles of ``bins`` equally likely prompts: every probability of ``profile`` scaled by ``x / mu``, where
    ``x ~ Beta(spread mu, spread (1 - mu))`` (its ``bins`` quantile midpoints) and ``mu`` is the first depth's
    acceptance; rows are renormalised to sum to at most 1. ``spread=None``: every prompt accepts alike.

    Prompts differ (code accepts more than prose); a static batch waits for its slowest row, so the spread of
    acceptance across prompts, not only its mean, sets the steps per batch.
    """
    if spread is None:
        return [profile]
    from scipy.stats import beta

    rows = [np.asarray(r, dtype=float) for r in profile]
    mu = float(np.clip(rows[0].sum(), 1e-6, 1 - 1e-6))
    x = beta.ppf((np.arange(bins) + 0.5) / bins, spread * mu, spread * (1 - mu))
    out = []
    for scale in x / mu:
        scaled = [r * scale for r in rows]
        out.append([tuple(r / max(1.0, r.sum())) for r in scaled])
    return out


def batch_steps(length_pmf: np.ndarray, max_new_tokens: int, batch_size: int, *, batching: str = "static") -> float:
    """Expected decode steps of one batch (the engine's loop: the prefill commits the first token, each step
    commits accepted + 1 tokens per row, at most ``max_new_tokens - 1`` steps).

    ``length_pmf``: accepted-drafts distribution of a step, ``(depth + 1,)``, or ``(P, depth + 1)`` for ``P``
    equally likely kinds of prompt (each row of the batch draws its kind once, :func:`prompt_profiles`).
    ``batching="static"``: the batch runs until its slowest row is done, the expected maximum over
    ``batch_size`` independent rows, ``sum_s 1 - F(s)^B`` with ``F`` a row's :func:`finish_cdf` (mixed over the
    prompt kinds); ``"continuous"``: a finished row is refilled, so a long run advances at one row's expected
    pace, ``sum_s 1 - F(s)`` (:func:`run_steps` for a run of given length).
    """
    rows = batch_size if batching == "static" else 1
    done = finish_cdf(length_pmf, max_new_tokens).mean(axis=0)  # (need + 1,): P(a row is done within s steps)
    return float(np.sum(1.0 - done[:-1] ** rows))


def finish_cdf(length_pmf: np.ndarray, max_new_tokens: int) -> np.ndarray:
    """``(P, need + 1)``: for each prompt kind (row of ``length_pmf``), the probability that a row is done within
    ``s = 0 .. need`` decode steps, ``need = max_new_tokens - 1`` (the engine's cap: done by step ``need``).

    Exact: the distribution of a row's committed tokens, short of ``need``, is pushed one step at a time through
    the step's ``1 + accepted`` tokens (a banded transition), until no row is left running.
    """
    need = max_new_tokens - 1
    pmfs = np.atleast_2d(np.asarray(length_pmf, dtype=float))
    pmfs = pmfs / pmfs.sum(axis=1, keepdims=True)
    done = np.ones((len(pmfs), need + 1))
    if need <= 0:
        return done
    running = np.zeros((len(pmfs), need))  # P(still running with t tokens beyond the first), t < need
    running[:, 0] = 1.0
    for step in range(1, need + 1):
        done[:, step - 1] = 1.0 - running.sum(axis=1)
        after = np.zeros_like(running)
        for accepted in range(min(pmfs.shape[1], need - 1)):
            gain = 1 + accepted
            after[:, gain:] += pmfs[:, accepted, None] * running[:, :need - gain]
        running = after
        if running.sum() < 1e-12:
            break
    return done


def run_steps(length_pmf: np.ndarray, max_new_tokens: int, batch_size: int, num_prompts: int, *,
              draws: int = 100, seed: int = 0) -> float:
    """Expected decode steps of a continuous-batching run of ``num_prompts`` prompts over ``batch_size`` slots
    (the engine's ``serve``): the first ``batch_size`` prompts start together, each later one takes the slot
    that frees first, and the run ends with its last row (list scheduling of the rows' simulated step counts)."""
    rng = np.random.default_rng(seed)
    steps = _row_steps(length_pmf, max_new_tokens, (draws, num_prompts), rng)
    slots = min(batch_size, num_prompts)
    makespans = []
    for sim in steps:
        free = list(sim[:slots])
        heapq.heapify(free)
        for need in sim[slots:]:
            heapq.heappush(free, heapq.heappop(free) + need)
        makespans.append(max(free))
    return float(np.mean(makespans))


def _row_steps(length_pmf: np.ndarray, max_new_tokens: int, shape: tuple[int, int], rng) -> np.ndarray:
    """Simulated decode steps of ``shape = (sims, rows)`` independent rows, each of a prompt kind drawn once
    (see :func:`batch_steps`); a row still short after ``max_new_tokens - 1`` steps stops there (engine cap)."""
    need = max_new_tokens - 1
    if need <= 0:
        return np.zeros(shape)
    pmfs = np.atleast_2d(np.asarray(length_pmf, dtype=float))
    cdf = np.cumsum(pmfs / pmfs.sum(axis=1, keepdims=True), axis=1)  # (P, D + 1)
    row_cdf = cdf[rng.integers(0, len(pmfs), size=shape)]  # (sims, rows, D + 1)
    total = np.zeros(shape)
    done_at = np.full(shape, float(need))
    running = np.ones(shape, dtype=bool)
    for step in range(1, need + 1):
        u = rng.random((*shape, 1))
        total += 1 + (u > row_cdf[..., :-1]).sum(axis=-1)  # accepted + bonus
        finished = running & (total >= need)
        done_at[finished] = step
        running &= ~finished
        if not running.any():
            break
    return done_at
