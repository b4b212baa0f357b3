"""The held-out evaluation set: token chunks sampled across many test-split files, at most a cap from each.

A prefix of the test split is a few files (the first file of the seeded order can be a generated table that
fills 40% of 131k tokens); perplexity on it measures those files. Here the test-split files are visited in a
seeded order and each gives one contiguous chunk of at most ``file_cap`` tokens at a seeded offset, until the
set holds ``max_tokens``: the set covers at least ``max_tokens / file_cap`` files and no file weighs more than
``file_cap / max_tokens`` of it. Chunks are separated by EOS, as files are in the training stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Document:
    """One test-split file in the test shard: its label, content hash, first token and token count (no EOS)."""

    label: str
    sha256: str
    start: int
    num_tokens: int


def _order(doc: Document, seed: int) -> bytes:
    """Seeded sort key of a file (by content hash, so it does not depend on where the file was found)."""
    return hashlib.sha256(f"heldout:{seed}:{doc.sha256}".encode()).digest()


def sample_heldout(tokens: np.ndarray, docs: list[Document], *, max_tokens: int, file_cap: int, seed: int,
                   eos_id: int) -> tuple[np.ndarray, list[dict]]:
    """Token ids of the held-out set and one ``{label, offset, num_tokens}`` entry per chunk.

    Each chunk (a file's tokens ``[offset, offset + num_tokens)``) is followed by EOS; ``num_tokens`` counts the
    EOS. The set stops at ``max_tokens`` (its last chunk may be cut) or when the files run out.
    """
    parts, entries, total = [], [], 0
    for doc in sorted((d for d in docs if d.num_tokens > 0), key=lambda d: _order(d, seed)):
        if total >= max_tokens:
            break
        size = min(doc.num_tokens, file_cap - 1, max_tokens - total - 1)   # room for the EOS
        if size < 1:
            break
        rng = np.random.default_rng([seed, int.from_bytes(bytes.fromhex(doc.sha256)[:8], "little")])
        offset = int(rng.integers(0, doc.num_tokens - size + 1))
        parts += [np.asarray(tokens[doc.start + offset:doc.start + offset + size]), np.array([eos_id])]
        entries.append({"label": doc.label, "offset": offset, "num_tokens": size + 1})
        total += size + 1
    ids = np.concatenate(parts).astype(tokens.dtype) if parts else np.zeros(0, dtype=tokens.dtype)
    return ids, entries


def composition(entries: list[dict]) -> dict:
    """What the manifest says about the set: tokens, files, and the largest share of one file."""
    total = sum(e["num_tokens"] for e in entries)
    largest = max((e["num_tokens"] for e in entries), default=0)
    return {"num_tokens": total, "num_files": len(entries),
            "largest_file_share": largest / total if total else 0.0}
