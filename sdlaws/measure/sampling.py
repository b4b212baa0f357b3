"""Token choice and lossless acceptance rules, as batched tensor ops without host synchronisation.

All randomness comes in as pre-drawn uniforms ``u`` in [0, 1) (drawn by the engine from one seeded
``torch.Generator``), so these functions are deterministic, run unchanged inside a captured CUDA graph, and
sample by inverse CDF instead of ``torch.multinomial``.
"""

from __future__ import annotations

import torch


def log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Float32 log-softmax of ``logits / temperature`` (``temperature == 0`` uses the raw logits)."""
    scores = logits.float()
    return torch.log_softmax(scores / temperature if temperature > 0 else scores, dim=-1)


def probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Float32 softmax of ``logits / temperature``; ``temperature`` must be > 0."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one index per row from unnormalised non-negative ``weights`` ``(..., V)`` with uniforms ``u`` ``(...)``.

    Inverse CDF: the first index whose cumulative weight exceeds ``u * total``; an index with zero weight is
    never returned (``right=True``), whatever ``u`` is.
    """
    cdf = weights.cumsum(dim=-1)
    threshold = (u * cdf[..., -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf.contiguous(), threshold.contiguous(), right=True).squeeze(-1)
    return idx.clamp(max=weights.shape[-1] - 1)


#: Widest block of the vocabulary that :func:`argmax` reduces in its first pass (a power of two dividing ``V``).
ARGMAX_BLOCK = 256


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=-1)`` ``(...)`` for ``(..., V)`` logits, the first index among equal maxima, in two passes.

    Why: on an H200, torch reduces a row of 128,256 bf16 logits with one block of threads (35 us, at batch 1 and
    at batch 64 alike: ~0.7% of an 8B decode step, and 2.6% of a chain's draft phase, which takes one argmax per
    drafted token; measurements/h200/phases-*.txt). The maxima of ``V / c`` blocks of ``c`` contiguous logits,
    then the first block holding the largest of them, then the index inside that block: three small kernels
    with one block per row and vocabulary block. Ties resolve as in ``torch.argmax`` (the first maximum of the
    first block that holds the maximum); NaN counts as the maximum in both passes, as in ``torch.max``.
    """
    vocab = logits.shape[-1]
    block = ARGMAX_BLOCK
    while block > 1 and vocab % block:
        block //= 2
    if block < 64 or block == vocab:  # no useful power-of-two block divides V, or one block is all of it
        return logits.argmax(dim=-1)
    maxima, inner = logits.unflatten(-1, (vocab // block, block)).max(dim=-1)  # (..., V / c) each
    first = maxima.argmax(dim=-1, keepdim=True)                                  # (..., 1)
    return (first * block + inner.gather(-1, first)).squeeze(-1)


def choose(logits: torch.Tensor, temperature: float, u: torch.Tensor | None) -> torch.Tensor:
    """The target's own next-token choice: argmax at ``temperature == 0``, else a sample of softmax(logits/T).

    Parameters
    ----------
    logits : Tensor
        ``(..., V)``.
    u : Tensor or None
        ``(...)`` uniforms; unused (may be None) at temperature 0.
    """
    if temperature == 0:
        return argmax(logits)
    return sample(probs(logits, temperature), u)


def leviathan_accept(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor,
                     u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling of a chain draft (Leviathan et al. 2023, Alg. 1; Chen et al. 2023).

    Draft token ``x_i`` is kept with probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection the
    replacement is drawn from ``norm(max(0, p_i - q_i))``; when all ``gamma`` are kept the bonus is drawn from
    ``p_{gamma+1}``. The output is distributed exactly as sampling from the target.

    Parameters
    ----------
    p : Tensor
        ``(B, gamma + 1, V)`` target probabilities at the verified positions.
    q : Tensor
        ``(B, gamma + 1, V)`` draft probabilities that ``draft`` was sampled from; row ``gamma`` must be zeros
        (so that the "residual" after a full accept is ``p`` itself).
    draft : Tensor
        ``(B, gamma)`` drafted tokens.
    u : Tensor
        ``(B, gamma + 1)`` uniforms: ``gamma`` for the accept tests, one for the replacement/bonus draw.

    Returns
    -------
    accepted : Tensor
        ``(B,)`` number of leading draft tokens kept.
    bonus : Tensor
        ``(B,)`` the token emitted after them.
    """
    gamma = draft.shape[1]
    index = draft.unsqueeze(-1)
    p_x = p[:, :gamma].gather(2, index).squeeze(-1)  # (B, gamma)
    q_x = q[:, :gamma].gather(2, index).squeeze(-1)
    keep = u[:, :gamma] * q_x < p_x  # P(keep) = min(1, p/q), without dividing
    accepted = keep.long().cumprod(dim=1).sum(dim=1)  # (B,) leading run of keeps
    at = accepted[:, None, None].expand(-1, 1, p.shape[-1])
    residual = (p.gather(1, at) - q.gather(1, at)).squeeze(1).clamp(min=0)  # (B, V)
    # A rejection implies p(x) < q(x), so p - q > 0 somewhere; the fallback only guards float underflow.
    empty = residual.sum(dim=-1, keepdim=True) <= 0
    residual = torch.where(empty, p.gather(1, at).squeeze(1), residual)
    return accepted, sample(residual, u[:, gamma])
