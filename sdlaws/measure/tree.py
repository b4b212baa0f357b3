"""Draft trees with static shapes: EAGLE-2-style top-k expansion, budgeted selection, verification walk.

Node pool of one step (per row), in creation order (parents always before children):

- depth 1: the root's top-``k`` children (``k`` nodes);
- depth ``i >= 2``: the top-``k`` children of each of the ``k`` frontier nodes of depth ``i - 1``
  (``k * k`` candidates, laid out ``[frontier f][rank r]``); the ``k`` best by cumulative draft log-probability
  become the next frontier (Li et al. 2024, EAGLE-2, arXiv 2406.16858, "expand" phase).

The ``budget`` best pool nodes overall are verified ("rerank" phase). Scores never increase along a path and
ties are broken by creation order (stable sort), so the selection is ancestor-closed. A chain is the case
``k = 1`` (pool = the chain itself).

A node's ancestry is kept as a path ``(depth,)`` of pool indices (its ancestor at each depth, itself at its own
depth, -1 below it), from which the verify block's ancestor matrix is gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TreeShape:
    """Static shape of the draft tree of one step.

    Attributes
    ----------
    topk : int
        Children per expanded node and frontier width ``k``.
    depth : int
        Draft depth ``d`` (``gamma`` for chains).
    budget : int
        Pool nodes verified per step.
    """

    topk: int
    depth: int
    budget: int

    @property
    def num_pool(self) -> int:
        """Pool size ``k + (d - 1) k^2``."""
        return self.topk + (self.depth - 1) * self.topk ** 2

    def level_start(self, depth: int) -> int:
        """Pool index of the first node of ``depth`` (1-based)."""
        return 0 if depth == 1 else self.topk + (depth - 2) * self.topk ** 2

    def node_depth(self, device: torch.device) -> torch.Tensor:
        """``(num_pool,)`` depth of every pool node."""
        sizes = [self.topk] + [self.topk ** 2] * (self.depth - 1)
        return torch.repeat_interleave(torch.arange(1, self.depth + 1, device=device),
                                       torch.tensor(sizes, device=device))

    def node_rank(self, device: torch.device) -> torch.Tensor:
        """``(num_pool,)`` rank (0 = most likely) of every pool node among its siblings."""
        return torch.arange(self.num_pool, device=device) % self.topk


def grow(pool_token: torch.Tensor, pool_score: torch.Tensor, pool_path: torch.Tensor, shape: TreeShape,
         level: int, frontier: torch.Tensor, child_token: torch.Tensor,
         child_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the children of the depth-``level`` frontier to the pool (in place) and pick the next frontier.

    Parameters
    ----------
    pool_token, pool_score : Tensor
        ``(B, num_pool)`` token and cumulative draft log-probability of every pool node.
    pool_path : Tensor
        ``(B, num_pool, depth)`` ancestor pool index per depth.
    level : int
        Depth of the frontier being expanded (1-based); its children get depth ``level + 1``.
    frontier : Tensor
        ``(B, k)`` pool indices of the frontier.
    child_token, child_logp : Tensor
        ``(B, k, k)`` top-``k`` children of each frontier node and their draft log-probabilities.

    Returns
    -------
    next_frontier : Tensor
        ``(B, k)`` pool indices of the ``k`` best children.
    parent : Tensor
        ``(B, k)`` position (0..k-1) in ``frontier`` of each next-frontier node's parent.
    """
    batch, k = frontier.shape
    start = shape.level_start(level + 1)
    stop = start + k * k
    parent_score = pool_score.gather(1, frontier)  # (B, k)
    score = (parent_score[:, :, None] + child_logp).flatten(1)  # (B, k*k), layout [frontier][rank]
    pool_token[:, start:stop] = child_token.flatten(1)
    pool_score[:, start:stop] = score
    parent_path = pool_path.gather(1, frontier[:, :, None].expand(batch, k, shape.depth))
    path = parent_path.repeat_interleave(k, dim=1)  # (B, k*k, depth)
    path[:, :, level] = torch.arange(start, stop, device=frontier.device)
    pool_path[:, start:stop] = path
    best = score.topk(k, dim=1).indices  # (B, k) in [0, k*k)
    return start + best, best // k


def select(pool_score: torch.Tensor, budget: int) -> torch.Tensor:
    """``(B, budget)`` pool indices of the best nodes, in creation order (ancestors first).

    Stable descending sort: a child never scores above its parent, and on a tie the parent (created earlier)
    comes first, so the selection is ancestor-closed.
    """
    if budget == pool_score.shape[1]:
        return torch.arange(budget, device=pool_score.device).expand(pool_score.shape[0], budget)
    order = torch.sort(pool_score, dim=1, descending=True, stable=True).indices[:, :budget]
    return order.sort(dim=1).values


def block_structure(pool_path: torch.Tensor, node_depth: torch.Tensor,
                    selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Verify-block structure for ``[root] + selected`` nodes.

    Parameters
    ----------
    pool_path : Tensor
        ``(B, num_pool, depth)`` from :func:`grow`.
    node_depth : Tensor
        ``(num_pool,)`` from :meth:`TreeShape.node_depth`.
    selected : Tensor
        ``(B, m)`` pool indices from :func:`select`.

    Returns
    -------
    ancestors : Tensor
        ``(B, m + 1, m + 1)`` bool, ``[j, i]`` = block node ``i`` is an ancestor of (or is) block node ``j``.
    depth : Tensor
        ``(B, m + 1)`` depth of each block node (root 0).
    parent : Tensor
        ``(B, m + 1)`` block index of each node's parent (root: 0).
    """
    batch, m = selected.shape
    depth = node_depth[selected]  # (B, m)
    path = pool_path.gather(1, selected[:, :, None].expand(batch, m, pool_path.shape[2]))  # (B, m, depth)
    at_depth_of_i = path.gather(2, (depth - 1)[:, None, :].expand(batch, m, m))  # [j, i]: j's ancestor at depth_i
    inner = at_depth_of_i == selected[:, None, :]
    ancestors = torch.zeros(batch, m + 1, m + 1, dtype=torch.bool, device=selected.device)
    ancestors[:, :, 0] = True
    ancestors[:, 1:, 1:] = inner
    block_depth = torch.cat([torch.zeros_like(depth[:, :1]), depth], dim=1)
    is_parent = ancestors & (block_depth[:, None, :] == block_depth[:, :, None] - 1)
    parent = is_parent.long().argmax(dim=2)  # root has no parent: all False -> 0
    return ancestors, block_depth, parent


def walk(choice: torch.Tensor, token: torch.Tensor, depth: torch.Tensor, parent: torch.Tensor,
         max_depth: int) -> torch.Tensor:
    """Accepted block nodes: the root, then every node whose token is its accepted parent's target choice.

    With ``choice`` the target's argmax this is greedy verification; with ``choice`` a sample of the target
    distribution at each node it is exact sampling from the target, since the walk follows the sampled token
    whenever the tree has it and otherwise stops with that token as the bonus (deterministic top-k candidates
    need no draft probabilities). Siblings have distinct tokens, so the accepted nodes form one path.

    Parameters
    ----------
    choice : Tensor
        ``(B, n)`` target's token choice after each block node.
    token, depth, parent : Tensor
        ``(B, n)`` block node token, depth and parent block index.
    max_depth : int
        Deepest block depth.

    Returns
    -------
    Tensor
        ``(B, n)`` bool.
    """
    accepted = torch.zeros_like(token, dtype=torch.bool)
    accepted[:, 0] = True
    matches = choice.gather(1, parent) == token
    for level in range(1, max_depth + 1):
        accepted = accepted | ((depth == level) & matches & accepted.gather(1, parent))
    return accepted


def accepted_path(accepted: torch.Tensor, depth: torch.Tensor, max_depth: int) -> torch.Tensor:
    """``(B, max_depth + 1)`` block index of the accepted node at each depth (entries past the end: 0)."""
    batch, n = accepted.shape
    column = torch.where(accepted, depth, max_depth + 1)  # rejected nodes go to a discarded column
    path = torch.zeros(batch, max_depth + 2, dtype=torch.long, device=accepted.device)
    path.scatter_(1, column, torch.arange(n, device=accepted.device).expand(batch, n))
    return path[:, : max_depth + 1]
