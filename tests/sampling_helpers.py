"""Helpers of the temperature > 0 losslessness tests (shared by the LM-draft and draft-head tests): exact
prefix distributions of a small-vocabulary target, seeded speculative samples, chi-square p-values."""

import numpy as np
import torch
from scipy import stats as scistats

from sdlaws.measure.engine import DecodeConfig, SpecDecoder

VOCAB = 8
PROMPT = [1, 2, 3]
NUM_NEW = 4  # token 1 comes from prefill; tokens 2..4 from the first speculative step(s)
NUM_SAMPLES = 3000
BATCH = 1000
P_MIN = 1e-3  # ~6 tests per configuration: a false alarm has probability < 1%


def exact_prefix_probs(model, temperature: float, length: int) -> np.ndarray:
    """``P(x_1..x_length)`` under the target at ``temperature``, shape ``(VOCAB,) * length``."""
    joint = torch.ones(1)
    prefixes = [[]]
    with torch.no_grad():
        for _ in range(length):
            ids = torch.tensor([PROMPT + p for p in prefixes])
            step = torch.softmax(model(input_ids=ids).logits[:, -1].double() / temperature, dim=-1)
            joint = (joint[:, None] * step).flatten()
            prefixes = [p + [v] for p in prefixes for v in range(VOCAB)]
    return joint.numpy().reshape((VOCAB,) * length)


def draw(target, draft, cfg: DecodeConfig) -> np.ndarray:
    """``(NUM_SAMPLES, NUM_NEW)`` engine samples from PROMPT."""
    decoder = SpecDecoder(target, draft, cfg, max_prompt_len=len(PROMPT))
    rows = []
    for _ in range(NUM_SAMPLES // BATCH):
        tokens, _ = decoder.generate([PROMPT] * BATCH)
        rows.extend(tokens)
    return np.array(rows)


def chi_square_p(observed_cells: np.ndarray, expected_prob: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value; cells with expected count < 5 are pooled into one."""
    counts = np.bincount(observed_cells, minlength=expected_prob.size).astype(float)
    expected = expected_prob.ravel() * counts.sum()
    small = expected < 5
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(scistats.chisquare(counts, expected * counts.sum() / expected.sum()).pvalue)


def p_values(samples: np.ndarray, joint: np.ndarray) -> dict[str, float]:
    """p-values of the marginals of tokens 1..NUM_NEW and of the pair (token 2, token 3)."""
    out = {}
    for pos in range(NUM_NEW):
        marginal = joint.sum(axis=tuple(a for a in range(NUM_NEW) if a != pos))
        out[f"token{pos + 1}"] = chi_square_p(samples[:, pos], marginal)
    pair = joint.sum(axis=(0, 3))
    out["tokens2-3"] = chi_square_p(samples[:, 1] * VOCAB + samples[:, 2], pair)
    return out


CASES = {
    "chain-T1": DecodeConfig(method="chain", num_spec_tokens=3, temperature=1.0, max_new_tokens=NUM_NEW),
    "chain-T0.6": DecodeConfig(method="chain", num_spec_tokens=2, temperature=0.6, max_new_tokens=NUM_NEW),
    "tree-T1": DecodeConfig(method="tree", num_spec_tokens=3, tree_topk=2, temperature=1.0, max_new_tokens=NUM_NEW),
}
