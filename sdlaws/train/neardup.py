"""Near-duplicate files by MinHash over token shingles, with LSH banding to find candidate pairs.

Installed packages vendor each other (``pip/_vendor``, ``setuptools/_vendor``...), ship one module per version of
a protocol, or generated files that differ by a header line. Exact hashes miss these; a model trained on one copy
and evaluated on another would score the test split too well. A file is a near duplicate of a kept one when the
Jaccard similarity of their sets of :data:`SHINGLE_TOKENS`-token shingles reaches the threshold (0.8 by default,
as in the deduplication of The Stack, Kocetkov et al. 2022, and of GPT-3's training data, Brown et al. 2020).

- MinHash (Broder 1997): for each of :data:`NUM_PERM` seeded hash functions, a file's signature keeps the least
  hash of its shingles; two signatures agree at a position with probability equal to the Jaccard similarity.
  The hash functions are multiply-shift ones (Dietzfelbinger et al. 1997) on 64-bit shingle hashes.
- LSH banding (Leskovec, Rajaraman and Ullman, *Mining of Massive Datasets*, ch. 3.4): the signature is cut into
  :data:`BANDS` bands of ``NUM_PERM / BANDS`` rows; files sharing one band exactly are candidates, which are
  then kept or dropped on the signature's Jaccard estimate. With 16 bands of 8 rows, a pair at similarity 0.8
  becomes a candidate with probability 1 - (1 - 0.8^8)^16 = 0.95, a pair at 0.5 with probability 0.06.

No MinHash library is installed in the project's environment, so this is the small numpy version of it.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

#: Tokens per shingle (word-level: identifiers, numbers and single punctuation characters).
SHINGLE_TOKENS = 5
#: Hash functions per signature and LSH bands (rows per band = NUM_PERM / BANDS).
NUM_PERM = 128
BANDS = 16
#: Shingles hashed per block: bounds the temporary (block x NUM_PERM) array to 64 MB.
BLOCK = 1 << 16
_WORD = re.compile(r"\w+|[^\w\s]")
_MIX = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit constant (golden ratio) mixing the shingle's tokens


def shingle_hashes(text: str) -> np.ndarray:
    """Distinct 64-bit hashes of the ``SHINGLE_TOKENS``-token shingles of ``text`` (one shingle if shorter)."""
    words = _WORD.findall(text)
    # a stable hash per distinct word (Python's str hash changes between processes)
    table = {w: int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in set(words)}
    ids = np.array([table[w] for w in words], dtype=np.uint64)
    width = min(SHINGLE_TOKENS, len(ids))
    out = np.zeros(len(ids) - width + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):     # uint64 arithmetic wraps modulo 2^64 on purpose
        for j in range(width):
            out = out * _MIX + ids[j:len(ids) - width + 1 + j]
    return np.unique(out)


class MinHasher:
    """Seeded multiply-shift hash functions and the MinHash signature they give a set of shingle hashes."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 0):
        rng = np.random.default_rng([seed, num_perm])
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """``(num_perm,)`` uint32: per hash function, the least of ``(a x + b) >> 32`` over ``hashes``."""
        sig = np.full(len(self.a), np.iinfo(np.uint32).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(hashes), BLOCK):
                block = hashes[start:start + BLOCK, None]
                sig = np.minimum(sig, ((block * self.a + self.b) >> np.uint64(32)).min(axis=0))
        return sig.astype(np.uint32)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    """Share of positions where two MinHash signatures agree: an unbiased estimate of the Jaccard similarity."""
    return float(np.mean(a == b))


class NearDuplicateIndex:
    """Signatures of the files kept so far, banded for lookup; :meth:`keep` admits a file or calls it a copy."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, bands: int = BANDS):
        self.threshold, self.rows = threshold, num_perm // bands
        self.buckets: dict[bytes, list[int]] = {}
        self.signatures: list[np.ndarray] = []

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        """One key per band: the band's index and its rows."""
        return [bytes([band]) + sig[band * self.rows:(band + 1) * self.rows].tobytes()
                for band in range(len(sig) // self.rows)]

    def keep(self, sig: np.ndarray) -> bool:
        """True (and the file is indexed) unless a kept file's estimated similarity reaches the threshold."""
        keys = self._keys(sig)
        candidates = {i for key in keys for i in self.buckets.get(key, ())}
        if any(jaccard_estimate(self.signatures[i], sig) >= self.threshold for i in candidates):
            return False
        for key in keys:
            self.buckets.setdefault(key, []).append(len(self.signatures))
        self.signatures.append(sig)
        return True
