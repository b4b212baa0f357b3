"""Helpers of the temperature > 0 losslessness tests (shared by the LM-draft and draft-head tests): exact
prefix distributions of a small-vocabulary target, seeded speculative samples, chi-square p-values; and, over
several speculative steps, the target's exact conditional of every generated token, a spy that marks the bonus
tokens of fully accepted drafts, and chi-square tests of the probability integral transforms."""

import numpy as np
import torch
from scipy import stats as scistats

from sdlaws.measure import engine
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


# ------------------------------------------------------------------ several speculative steps, per-token conditionals

#: Ragged, distinct prompts decoded together (each repeated ROWS_PER_PROMPT times in one batch).
STEP_PROMPTS = [[1, 2, 3], [6], [4, 0, 7, 5, 2], [3, 3]]
ROWS_PER_PROMPT = 500
#: Prefill token + two full steps of gamma 3 (or three of depth 2): every row goes through >= 2 verify steps.
STEP_NEW = 9
STEP_CASES = {
    "chain-T1": DecodeConfig(method="chain", num_spec_tokens=3, temperature=1.0, max_new_tokens=STEP_NEW),
    "tree-T0.7": DecodeConfig(method="tree", num_spec_tokens=2, tree_topk=2, temperature=0.7, max_new_tokens=STEP_NEW),
}
PIT_BINS = 10
#: False-alarm rate of the whole family (per case: one test per position and one of the bonus tokens), split evenly
#: (Bonferroni).
FAMILY_ALPHA = 0.01
STEP_ALPHA = FAMILY_ALPHA / (len(STEP_CASES) * (STEP_NEW + 1))


def record_full_accepts(monkeypatch) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Spy on the engine's commit: for every step, (index of the row's first token committed this step, whether
    the row accepted its whole draft path, depth). The list fills as the decoder runs."""
    real = engine._Workspace._commit
    steps = []

    def spy(ws, block, path, accepted, bonus, active, root_slot):
        first = (ws.length - ws.prompt_len).numpy().copy()  # before this commit moves ``length``
        steps.append((first, (active & (accepted == ws.depth)).numpy().copy(), ws.depth))
        return real(ws, block, path, accepted, bonus, active, root_slot)

    monkeypatch.setattr(engine._Workspace, "_commit", spy)
    return steps


def bonus_mask(steps, shape: tuple[int, int]) -> np.ndarray:
    """``(rows, STEP_NEW)`` bool: the token is the target's bonus after a fully accepted draft path."""
    mask = np.zeros(shape, dtype=bool)
    for first, full, depth in steps:
        at = first + depth  # the path's ``depth`` tokens come first, the bonus after them
        rows = np.nonzero(full & (at < shape[1]))[0]
        mask[rows, at[rows]] = True
    return mask


def draw_steps(target, draft, cfg: DecodeConfig, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """Engine samples ``(rows, STEP_NEW)`` of STEP_PROMPTS (one batch) and their :func:`bonus_mask`."""
    steps = record_full_accepts(monkeypatch)
    prompts = [p for p in STEP_PROMPTS for _ in range(ROWS_PER_PROMPT)]
    decoder = SpecDecoder(target, draft, cfg, max_prompt_len=max(map(len, STEP_PROMPTS)))
    tokens = np.array(decoder.generate(prompts)[0])
    return tokens, bonus_mask(steps, tokens.shape)


def target_conditionals(target, tokens: np.ndarray, temperature: float) -> np.ndarray:
    """``(rows, STEP_NEW, VOCAB)`` target distribution of each generated token given its prompt and the tokens
    before it (one teacher-forced forward per prompt; rows in STEP_PROMPTS order)."""
    out = []
    with torch.no_grad():
        for i, prompt in enumerate(STEP_PROMPTS):
            rows = torch.from_numpy(tokens[i * ROWS_PER_PROMPT:(i + 1) * ROWS_PER_PROMPT])
            ids = torch.cat([torch.tensor(prompt).expand(len(rows), -1), rows[:, :-1]], dim=1)
            logits = target(input_ids=ids).logits[:, len(prompt) - 1:].double()  # plain forward, no cache
            out.append(torch.softmax(logits / temperature, dim=-1).numpy())
    return np.concatenate(out)


def randomized_pit(probs: np.ndarray, tokens: np.ndarray, seed: int) -> np.ndarray:
    """Randomised probability integral transform of each token under its conditional ``probs`` (tokens ordered
    from most to least likely): ``P(more likely tokens) + v * p(token)``, ``v`` uniform.

    If every token follows its conditional given the tokens before it, these are independent Uniform(0, 1)
    (Rosenblatt's transform; Brockwell 2007 for discrete laws), whatever the row, position or step. A token
    drawn from a wrong distribution tends to be unlikely under the right one: its value then lands near 1.
    """
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=-1)
    rank = np.argmax(order == tokens[..., None], axis=-1)
    above = np.take_along_axis(np.cumsum(sorted_p, axis=-1) - sorted_p, rank[..., None], axis=-1)[..., 0]
    p_token = np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
    return above + np.random.default_rng(seed).random(tokens.shape) * p_token


def uniform_p(values: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value of ``values`` against Uniform(0, 1) over PIT_BINS equal bins."""
    counts = np.histogram(values, bins=PIT_BINS, range=(0.0, 1.0))[0]
    return float(scistats.chisquare(counts).pvalue)


def step_p_values(pit: np.ndarray, bonus: np.ndarray) -> dict[str, float]:
    """p-values of each generated position (all rows) and of the bonus tokens after full accepts (any position).

    The bonus subset is a fair test on its own: whether a step accepts its whole path is settled before the bonus
    is drawn, so given that event the bonus still follows the target's conditional.
    """
    out = {f"token{t + 1}": uniform_p(pit[:, t]) for t in range(pit.shape[1])}
    out["bonus"] = uniform_p(pit[bonus])
    return out
