"""A pre-training corpus that needs no network: the Python source already installed on the machine.

A Python environment with torch and the usual scientific stack holds tens of thousands of ``.py`` files (about
25,000 files, 388 MB, on the GPU machines the shipped experiments ran on) in its site-packages, plus the
standard library; ``sysconfig.get_paths()`` finds them. With ``native_and_docs`` the C/C++/CUDA headers and
sources and the documentation files under the same roots (and Python's own headers) are read too.
:func:`build_corpus` reads them (and optional extra text), drops exact duplicates by content hash and near
duplicates by MinHash (:mod:`.neardup`), splits train/test **by file** with a seeded hash of the content (so the
split does not depend on where Python is installed), trains a byte-level BPE tokenizer on a sample of the
train split, samples the held-out evaluation set across test files (:mod:`.evalset`) and writes::

    <dir>/train.bin, <dir>/test.bin   little-endian uint16 token ids, EOS after every file
    <dir>/heldout.bin                the held-out evaluation set (chunks of many test files, EOS after each)
    <dir>/tokenizer.json             the tokenizer (tokenizers library format)
    <dir>/manifest.json              provenance: every file with sha256, bytes, tokens, split; tokens per source
                                     type; dedup counts; the held-out set's composition; versions; hashes

The manifest is written last, so a directory with a manifest is complete. Format 2 added the near-duplicate
removal, the source types and ``heldout.bin``; a format-1 directory still loads, and its held-out set is the
test split itself (perplexity then reads its prefix, as before).

One module because discovery, filtering, de-duplication, tokenisation and the manifest are one
pipeline over one file list.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from sdlaws import io
from sdlaws.errors import ConfigError, InputError
from sdlaws.provenance import git_sha, now_utc, version
from sdlaws.train import neardup
from sdlaws.train import tokenizer as tok
from sdlaws.train.evalset import Document, composition, sample_heldout
from sdlaws.train.neardup import MinHasher, NearDuplicateIndex, shingle_hashes

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

MANIFEST_FORMAT = "sdlaws-corpus/2"
#: Formats :func:`load_corpus` opens (format 1: no near-duplicate removal, no ``heldout.bin``).
READABLE_FORMATS = ("sdlaws-corpus/1", MANIFEST_FORMAT)
TOKEN_DTYPE = np.dtype("<u2")  # little-endian uint16: 2 bytes per token on disk
#: Source types by file suffix; the manifest counts files, bytes and tokens of each.
SOURCE_TYPES = {"python": (".py",), "native": (".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".cu", ".cuh"),
                "docs": (".md", ".rst", ".txt")}
#: Suffixes read from ``extra`` directories (single extra files are read whatever their name).
TEXT_SUFFIXES = (".py", ".txt", ".md", ".rst")
#: Files whose MinHash signatures are computed together (in worker threads) before the sequential dedup pass.
SIGNATURE_CHUNK_FILES = 256
#: Files encoded per ``encode_batch_fast`` call: enough work for every core, little memory.
ENCODE_CHUNK_FILES = 512
SPLITS = ("train", "test")


@dataclass(frozen=True)
class CorpusConfig:
    """What goes into a corpus (recorded in the manifest; a rebuild with the same config reuses the directory).

    Parameters
    ----------
    sources : tuple of str
        Directories whose ``.py`` files are read; empty means this Python's stdlib and site-packages.
    extra : tuple of str
        Extra text files (``.gz`` / ``.dz`` are decompressed) or directories (``TEXT_SUFFIXES`` files).
    vocab_size : int
        BPE vocabulary size, EOS included.
    test_fraction : float
        Expected share of files held out for the test split (at least one file is held out).
    max_bytes, max_tokens : int, optional
        Caps on the source bytes read and on the train tokens written (files are taken in seeded-hash order,
        so a capped corpus is a random sample of files, not the first packages alphabetically).
    max_file_bytes : int
        Larger files (generated tables, vendored bundles) are skipped.
    tokenizer_sample_bytes : int
        Bytes of train-split text the tokenizer is trained on.
    seed : int
        Seed of the split, of the file order and of the held-out sample.
    near_dup_threshold : float, optional
        Files whose estimated Jaccard similarity of 5-token shingles with a kept file reaches this are dropped
        (:mod:`.neardup`; 0.8 as in The Stack); None keeps near duplicates.
    native_and_docs : bool
        Also read C/C++/CUDA sources and headers and docs (``SOURCE_TYPES``) under the roots.
    heldout_tokens, heldout_file_cap : int
        Size of the held-out evaluation set and the most tokens it takes from one test file (:mod:`.evalset`).
    """

    sources: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    vocab_size: int = 8192
    test_fraction: float = 0.02
    max_bytes: int | None = None
    max_tokens: int | None = None
    max_file_bytes: int = 1_000_000
    tokenizer_sample_bytes: int = 32_000_000
    seed: int = 0
    near_dup_threshold: float | None = 0.8
    native_and_docs: bool = False
    heldout_tokens: int = 1_048_576
    heldout_file_cap: int = 4096

    def check(self) -> "CorpusConfig":
        """Return self, or raise :class:`ConfigError` naming the impossible option."""
        tok.check_vocab_size(self.vocab_size)
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction {self.test_fraction:g} is out of range; expected a number in (0, 1), "
                              "e.g. 0.02")
        for name in ("max_bytes", "max_tokens", "max_file_bytes", "tokenizer_sample_bytes", "heldout_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {value}")
        if self.heldout_file_cap < 2:
            raise ConfigError(f"heldout-file-cap must be at least 2 tokens (one and an EOS), got "
                              f"{self.heldout_file_cap}")
        if self.near_dup_threshold is not None and not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError(f"near-dup threshold {self.near_dup_threshold:g} is out of range; expected a "
                              "Jaccard similarity in (0, 1], e.g. 0.8")
        return self


@dataclass
class SourceFile:
    """One input document: where it came from, its content hash, its seeded order and split scores."""

    label: str          # "<root label>/<path relative to root>" (portable across machines)
    path: Path
    text: str
    sha256: str
    num_bytes: int
    order: float        # seeded uniform [0, 1): position in the corpus (caps keep the lowest)
    split_score: float  # independent seeded uniform [0, 1): test split if < test_fraction
    split: str = "train"
    num_tokens: int = 0

    @property
    def kind(self) -> str:
        """Source type (a key of :data:`SOURCE_TYPES`, or ``"other"`` for extra files of another suffix)."""
        return source_type(self.path)


@dataclass
class _Skipped:
    """Files left out, by reason (recorded in the manifest)."""

    duplicate: int = 0
    near_duplicate: int = 0
    not_utf8: int = 0
    empty: int = 0
    too_large: int = 0
    unreadable: int = 0
    over_cap: int = 0


@dataclass(frozen=True)
class Corpus:
    """A built corpus directory (see the module docstring for the files)."""

    path: Path
    manifest: dict = field(repr=False)

    @property
    def sha256(self) -> str:
        """Hash of the token shards and tokenizer: the corpus identity recorded by models trained on it."""
        return self.manifest["corpus_sha256"]

    @property
    def manifest_sha256(self) -> str:
        """sha256 of ``manifest.json`` itself (file list, config, versions, time of the build)."""
        return hashlib.sha256((self.path / "manifest.json").read_bytes()).hexdigest()

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the corpus tokenizer."""
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def eos_id(self) -> int:
        """Id of the EOS token that separates files in the shards."""
        return int(self.manifest["tokenizer"]["eos_id"])

    def num_tokens(self, split: str = "train") -> int:
        """Tokens in ``split`` (EOS separators included)."""
        return int(self.manifest["splits"][_check_split(split)]["num_tokens"])

    def tokens(self, split: str = "train") -> np.memmap:
        """Read-only memory map of the ``split`` token ids (shape ``(num_tokens,)``, uint16)."""
        return np.memmap(self.path / f"{_check_split(split)}.bin", dtype=TOKEN_DTYPE, mode="r")

    @property
    def has_sampled_heldout(self) -> bool:
        """True for format 2 and later: ``heldout.bin`` was sampled across test files."""
        return self.manifest["format"] != READABLE_FORMATS[0]

    @property
    def heldout_path(self) -> Path:
        """The held-out evaluation set: ``heldout.bin``, or the test split of a format-1 corpus."""
        return self.path / ("heldout.bin" if self.has_sampled_heldout else "test.bin")

    @property
    def heldout_name(self) -> str:
        """Name of the held-out set in ``ppl`` rows: kind of set and corpus hash."""
        return f"corpus-{'heldout' if self.has_sampled_heldout else 'test'}-{self.sha256[:8]}"

    def heldout_tokens(self) -> np.memmap:
        """Read-only memory map of the held-out evaluation set (:attr:`heldout_path`)."""
        return np.memmap(self.heldout_path, dtype=TOKEN_DTYPE, mode="r")

    def tokenizer(self) -> "Tokenizer":
        """The ``tokenizers`` tokenizer of ``tokenizer.json``."""
        return tok.load_tokenizer(self.path / "tokenizer.json")

    def hf_tokenizer(self) -> "PreTrainedTokenizerFast":
        """The tokenizer wrapped for ``transformers`` (saved into every model directory)."""
        return tok.to_hf_tokenizer(self.tokenizer())

    def to_dict(self) -> dict:
        """The manifest without its per-file and per-chunk lists (plain types)."""
        out = {k: v for k, v in self.manifest.items() if k != "files"} | {"path": str(self.path)}
        if "heldout" in out:
            out["heldout"] = {k: v for k, v in out["heldout"].items() if k != "chunks"}
        return out

    def summary(self) -> str:
        """One-paragraph description: files, bytes, tokens per split, vocabulary, hash."""
        s = self.manifest["splits"]
        lines = [f"corpus {self.path} (sha256 {self.sha256[:12]}), vocab {self.vocab_size}, eos id {self.eos_id}"]
        for split in SPLITS:
            lines.append(f"  {split:5s}: {s[split]['num_files']:6d} files, {s[split]['num_bytes'] / 1e6:9.1f} MB, "
                         f"{s[split]['num_tokens'] / 1e6:9.2f} M tokens")
        if self.has_sampled_heldout:
            h = self.manifest["heldout"]
            lines.append(f"  held-out: {h['num_tokens'] / 1e6:.2f} M tokens from {h['num_files']} test files "
                         f"(largest file share {h['largest_file_share']:.1%})")
            lines.append("  tokens by source type: " + ", ".join(
                f"{kind} {sum(v['num_tokens'] for v in by_split.values()) / 1e6:.2f} M"
                for kind, by_split in self.manifest["source_types"].items()))
        lines.append(f"  skipped: {self.manifest['skipped']}")
        return "\n".join(lines)


def _check_split(split: str) -> str:
    """Return ``split`` or raise :class:`ConfigError` if it is not train or test."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")
    return split


def source_type(path: Path) -> str:
    """The :data:`SOURCE_TYPES` key of a file by its suffix (``.gz`` / ``.dz`` looked through), else "other"."""
    name = path.name[:-3] if path.name.endswith((".gz", ".dz")) else path.name
    return next((kind for kind, suffixes in SOURCE_TYPES.items() if name.endswith(suffixes)), "other")


def python_source_roots() -> dict[str, Path]:
    """This interpreter's source directories, by ``sysconfig`` key (stdlib, platstdlib, purelib, platlib)."""
    paths = sysconfig.get_paths()
    roots: dict[str, Path] = {}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = Path(paths[key]).resolve()
        if path.is_dir() and path not in roots.values():
            roots[key] = path
    return roots


def _walk(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Files under ``root`` with one of ``suffixes``, in sorted order (``__pycache__`` skipped)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(suffixes):
                yield Path(dirpath, name)


def discover(config: CorpusConfig) -> list[tuple[str, Path, bool]]:
    """``(label, path, named)`` of every candidate file, each real path once, in a deterministic order.

    ``named`` is True for files given explicitly in ``extra`` (read whole, whatever their size).
    """
    roots = {Path(s).name or str(s): Path(s) for s in config.sources} if config.sources else python_source_roots()
    suffixes = sum(SOURCE_TYPES.values(), ()) if config.native_and_docs else (".py",)
    if config.native_and_docs and not config.sources:
        roots |= _header_roots(roots)
    found: list[tuple[str, Path, bool]] = []
    seen: set[Path] = set()

    def add(label: str, path: Path, named: bool = False) -> None:
        """Record ``path`` unless its real path was seen already."""
        real = path.resolve()
        if real not in seen and real.is_file():
            seen.add(real)
            found.append((label, path, named))

    for label, root in roots.items():
        if not root.is_dir():
            raise InputError(f"{root}: source directory does not exist; pass an existing --source directory")
        for path in _walk(root, suffixes):
            add(f"{label}/{path.relative_to(root).as_posix()}", path)
    for item in map(Path, config.extra):
        if item.is_dir():
            for path in _walk(item, TEXT_SUFFIXES):
                add(f"extra:{item.name}/{path.relative_to(item).as_posix()}", path)
        elif item.is_file():
            add(f"extra:{item.name}", item, named=True)
        else:
            raise InputError(f"{item}: no such file or directory; fix the --extra path")
    return found


def _header_roots(known: dict[str, Path]) -> dict[str, Path]:
    """Python's own C headers (``sysconfig`` include, platinclude), unless under a root already read."""
    paths = sysconfig.get_paths()
    found: dict[str, Path] = {}
    for key in ("include", "platinclude"):
        path = Path(paths[key]).resolve()
        inside = any(path.is_relative_to(root) for root in (*known.values(), *found.values()))
        if path.is_dir() and not inside:
            found[key] = path
    return found


def _read(path: Path, max_file_bytes: int | None) -> tuple[str | None, str]:
    """Text of ``path`` (gzip-decompressed for .gz/.dz) or ``None`` with the skip reason.

    ``max_file_bytes`` is None for files the user named explicitly: those are always read whole.
    """
    try:
        if max_file_bytes is not None and path.stat().st_size > max_file_bytes:
            return None, "too_large"
        data = path.read_bytes()
        if path.suffix in (".gz", ".dz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None, "unreadable"
    if not data.strip():
        return None, "empty"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "not_utf8"


def _score(sha256: str, seed: int, purpose: str) -> float:
    """Seeded uniform [0, 1) score of a file's content hash; ``purpose`` makes independent scores."""
    digest = hashlib.sha256(f"{purpose}:{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def read_sources(config: CorpusConfig, candidates: list[tuple[str, Path, bool]], progress
                 ) -> tuple[list[SourceFile], _Skipped]:
    """Read, hash, dedupe, score and split the candidate files (:func:`discover`); apply ``max_bytes``.

    Returns the kept files in seeded order (train and test interleaved) and the skip counts.
    """
    skipped = _Skipped()
    task = progress.add_task("reading sources", total=len(candidates))

    def load(item: tuple[str, Path, bool]):
        """Read one candidate (runs in a worker thread)."""
        label, path, named = item
        text, reason = _read(path, None if named else config.max_file_bytes)
        return label, path, text, reason

    files: list[SourceFile] = []
    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 2)) as pool:
        for label, path, text, reason in pool.map(load, candidates, chunksize=64):
            progress.advance(task)
            if text is None:
                setattr(skipped, reason, getattr(skipped, reason) + 1)
                continue
            raw = text.encode("utf-8")
            sha = hashlib.sha256(raw).hexdigest()
            if sha in seen:
                skipped.duplicate += 1
                continue
            seen.add(sha)
            files.append(SourceFile(label, path, text, sha, len(raw), _score(sha, config.seed, "order"),
                                    _score(sha, config.seed, "split")))
        files.sort(key=lambda f: f.order)
        files = _select(files, config, skipped, pool, progress)
    if len(files) < 2:
        raise InputError(f"found {len(files)} usable text file(s) in the sources; a corpus needs at least 2 "
                         "(one train, one test): pass more --source/--extra paths")
    _assign_splits(files, config.test_fraction)
    return files, skipped


def _select(files: list[SourceFile], config: CorpusConfig, skipped: _Skipped, pool: ThreadPoolExecutor,
            progress) -> list[SourceFile]:
    """Files in seeded order that are no near duplicate of an earlier one, up to ``max_bytes`` (at least two).

    Near duplicates are looked for only until the byte cap is reached, so a capped corpus costs the signatures
    of the files it keeps (and of the copies met on the way), not of every file read.
    """
    index = None if config.near_dup_threshold is None else NearDuplicateIndex(config.near_dup_threshold)
    hasher = MinHasher(seed=config.seed)

    def signature(f: SourceFile):
        """MinHash signature of one file (runs in a worker thread; numpy releases the GIL), or None."""
        return None if index is None else hasher.signature(shingle_hashes(f.text))

    task = progress.add_task("near duplicates", total=len(files))
    kept, total = [], 0
    for start in range(0, len(files), SIGNATURE_CHUNK_FILES):
        chunk = files[start:start + SIGNATURE_CHUNK_FILES]
        for position, (f, sig) in enumerate(zip(chunk, pool.map(signature, chunk))):
            progress.advance(task)
            if config.max_bytes is not None and total >= config.max_bytes and len(kept) >= 2:
                skipped.over_cap += len(files) - start - position
                return kept
            if index is not None and not index.keep(sig):
                skipped.near_duplicate += 1
                continue
            kept.append(f)
            total += f.num_bytes
    return kept


def _assign_splits(files: list[SourceFile], test_fraction: float) -> None:
    """Test split = files scored below ``test_fraction``; at least one file in each split."""
    for f in files:
        f.split = "test" if f.split_score < test_fraction else "train"
    by_score = sorted(files, key=lambda f: f.split_score)
    if all(f.split == "train" for f in files):
        by_score[0].split = "test"   # the file closest to the threshold
    if all(f.split == "test" for f in files):
        by_score[-1].split = "train"


def _tokenizer_sample(files: list[SourceFile], sample_bytes: int) -> list[str]:
    """Texts of the first train files (seeded order) until ``sample_bytes``: the tokenizer's training set."""
    sample, total = [], 0
    for f in files:
        if f.split == "train" and total < sample_bytes:
            sample.append(f.text)
            total += f.num_bytes
    return sample


class _ShardWriter:
    """Appends uint16 token arrays of one split to an open file and hashes what it writes.

    With ``keep`` the written arrays are also kept in memory (the test split's, a few percent of the corpus, from
    which the held-out set is sampled before the shards are installed).
    """

    def __init__(self, handle, eos_id: int, keep: bool = False):
        self.handle = handle
        self.hash = hashlib.sha256()
        self.eos = np.array([eos_id], dtype=TOKEN_DTYPE)
        self.num_tokens = self.num_files = self.num_bytes = 0
        self.kept: list[np.ndarray] | None = [] if keep else None

    def write(self, ids: np.ndarray, num_bytes: int) -> None:
        """Append one file's ids and an EOS."""
        for part in (ids.astype(TOKEN_DTYPE, copy=False), self.eos):
            data = part.tobytes()
            self.handle.write(data)
            self.hash.update(data)
            if self.kept is not None:
                self.kept.append(part)
        self.num_tokens += ids.size + 1
        self.num_files += 1
        self.num_bytes += num_bytes

    def summary(self) -> dict:
        """The shard's files, bytes, tokens and sha256."""
        return {"num_files": self.num_files, "num_bytes": self.num_bytes, "num_tokens": self.num_tokens,
                "sha256": self.hash.hexdigest()}


def encode_files(files: list[SourceFile], tokenizer: "Tokenizer", directory: Path, max_tokens: int | None,
                 progress) -> tuple[list[SourceFile], dict, np.ndarray]:
    """Tokenize ``files`` in batches (multi-threaded in the library) and write the two shards.

    Stops after the train split reaches ``max_tokens``; returns the files written, the split summaries and the
    test shard's ids. Each shard is written atomically (:func:`sdlaws.io.atomic_write`).
    """
    # A file that contains the text "<|endoftext|>" (tokenizer code does) must not get an EOS id inside it:
    # EOS ids in the shards are exactly the file separators.
    tokenizer.encode_special_tokens = True
    with ExitStack() as shards:
        writers = {s: _ShardWriter(shards.enter_context(io.atomic_write(directory / f"{s}.bin", "wb")),
                                   tok.eos_id(tokenizer), keep=s == "test") for s in SPLITS}
        task = progress.add_task("tokenizing", total=sum(f.num_bytes for f in files))
        written: list[SourceFile] = []
        for start in range(0, len(files), ENCODE_CHUNK_FILES):
            if max_tokens is not None and writers["train"].num_tokens >= max_tokens:
                break
            chunk = files[start:start + ENCODE_CHUNK_FILES]
            for f, enc in zip(chunk, tokenizer.encode_batch_fast([f.text for f in chunk])):
                if max_tokens is not None and writers["train"].num_tokens >= max_tokens:
                    break
                ids = np.asarray(enc.ids, dtype=TOKEN_DTYPE)
                f.num_tokens = int(ids.size) + 1
                writers[f.split].write(ids, f.num_bytes)
                written.append(f)
                progress.advance(task, f.num_bytes)
    test_ids = np.concatenate(writers["test"].kept) if writers["test"].kept else np.zeros(0, TOKEN_DTYPE)
    return written, {s: w.summary() for s, w in writers.items()}, test_ids


def write_heldout(written: list[SourceFile], test_ids: np.ndarray, config: CorpusConfig, eos_id: int,
                  directory: Path) -> dict:
    """Sample the held-out set from the test split (:func:`.evalset.sample_heldout`), write ``heldout.bin``
    atomically and return its manifest entry: composition, sha256, sampling settings and chunks."""
    docs, start = [], 0
    for f in (f for f in written if f.split == "test"):
        docs.append(Document(f.label, f.sha256, start, f.num_tokens - 1))   # the file's EOS is not sampled
        start += f.num_tokens
    ids, chunks = sample_heldout(test_ids, docs, max_tokens=config.heldout_tokens,
                                 file_cap=config.heldout_file_cap, seed=config.seed, eos_id=eos_id)
    data = ids.astype(TOKEN_DTYPE).tobytes()
    with io.atomic_write(directory / "heldout.bin", "wb") as fh:
        fh.write(data)
    return {**composition(chunks), "sha256": hashlib.sha256(data).hexdigest(),
            "requested_tokens": config.heldout_tokens, "file_cap": config.heldout_file_cap, "chunks": chunks}


def build_corpus(out: str | Path, config: CorpusConfig = CorpusConfig(), *, progress: bool = True) -> Corpus:
    """Build (or reuse) a corpus directory.

    Parameters
    ----------
    out : path
        Output directory. If it already holds a manifest with the same ``config`` it is reused as-is.
    config : CorpusConfig
        Sources, caps, vocabulary and seed.
    progress : bool
        Show a rich progress bar (on stderr).

    Returns
    -------
    Corpus

    Raises
    ------
    ConfigError
        ``out`` holds a corpus built with a different config.
    InputError
        A source path does not exist or fewer than two usable files were found.

    The tokenizer, the shards and the manifest are installed together once all are written
    (:func:`sdlaws.io.output_group`): a build that fails leaves ``out`` as it was.
    """
    from rich.console import Console
    from rich.progress import Progress

    config.check()
    out = Path(out)
    existing = out / "manifest.json"
    if existing.exists():
        corpus = load_corpus(out)
        if not corpus.has_sampled_heldout:
            raise ConfigError(f"{out} holds a corpus of format {corpus.manifest['format']} (no near-duplicate "
                              "removal, no sampled held-out set); pass another --out, delete it to rebuild, or "
                              "pass it as --corpus to use it as it is")
        if corpus.manifest["config"] != _config_dict(config):
            raise ConfigError(f"{out} holds a corpus built with other settings; pass another --out or delete it")
        return corpus
    candidates = discover(config)  # a missing source fails before the progress bar starts
    with io.output_group(), Progress(console=Console(stderr=True), disable=not progress) as bar:
        files, skipped = read_sources(config, candidates, bar)
        sample = _tokenizer_sample(files, config.tokenizer_sample_bytes)
        task = bar.add_task(f"training tokenizer ({sum(map(len, sample)) / 1e6:.1f} MB)", total=1)
        tokenizer = tok.train_tokenizer(sample, vocab_size=config.vocab_size, length=len(sample))
        bar.advance(task)
        tokenizer_sha = tok.save_tokenizer(tokenizer, out / "tokenizer.json")
        written, splits, test_ids = encode_files(files, tokenizer, out, config.max_tokens, bar)
        heldout = write_heldout(written, test_ids, config, tok.eos_id(tokenizer), out)
        skipped.over_cap += len(files) - len(written)
        manifest = _manifest(config, written, splits, heldout, skipped, tokenizer, tokenizer_sha, len(sample))
        io.save_text(json.dumps(manifest, indent=1) + "\n", existing)
    return Corpus(out, manifest)


def _config_dict(config: CorpusConfig) -> dict:
    """``config`` as it reads back from the manifest (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))  # tuples -> lists, as read back from JSON


def _source_types(files: list[SourceFile]) -> dict:
    """Files, bytes and tokens per source type and split (types present only)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for f in files:
        entry = out.setdefault(f.kind, {}).setdefault(f.split, {"num_files": 0, "num_bytes": 0, "num_tokens": 0})
        entry["num_files"] += 1
        entry["num_bytes"] += f.num_bytes
        entry["num_tokens"] += f.num_tokens
    return out


def _manifest(config: CorpusConfig, files: list[SourceFile], splits: dict, heldout: dict, skipped: _Skipped,
              tokenizer: "Tokenizer", tokenizer_sha: str, sample_files: int) -> dict:
    """The provenance record written as ``manifest.json``."""
    corpus_hash = hashlib.sha256("".join([tokenizer_sha, splits["train"]["sha256"], splits["test"]["sha256"],
                                          heldout["sha256"]]).encode()).hexdigest()
    roots = {k: str(v) for k, v in python_source_roots().items()} if not config.sources else {}
    return {
        "format": MANIFEST_FORMAT,
        "corpus_sha256": corpus_hash,
        "created_utc": now_utc(),
        "config": _config_dict(config),
        "versions": {"sdlaws_git_sha": git_sha(), "python": platform.python_version(),
                     **{p: version(p) for p in ("sdlaws", "tokenizers", "numpy", "transformers")}},
        "roots": roots,
        "tokenizer": {"vocab_size": tokenizer.get_vocab_size(), "eos_id": tok.eos_id(tokenizer),
                      "sha256": tokenizer_sha, "sample_files": sample_files, "kind": "byte-level BPE"},
        "token_dtype": TOKEN_DTYPE.str,
        "splits": splits,
        "source_types": _source_types(files),
        "dedup": {"exact_duplicates": skipped.duplicate, "near_duplicates": skipped.near_duplicate,
                  "near_dup_threshold": config.near_dup_threshold,
                  "method": f"MinHash of {neardup.SHINGLE_TOKENS}-token shingles, {neardup.NUM_PERM} hash "
                            f"functions, LSH {neardup.BANDS} bands (sdlaws.train.neardup)"},
        "heldout": heldout,
        "skipped": asdict(skipped),
        "files": [{"label": f.label, "sha256": f.sha256, "num_bytes": f.num_bytes, "num_tokens": f.num_tokens,
                   "split": f.split} for f in files],
    }


def load_corpus(path: str | Path) -> Corpus:
    """Open a corpus directory written by :func:`build_corpus` (checks the manifest and shard sizes)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{path}: no manifest.json; build the corpus with `sdlaws train corpus --out {path}`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{manifest_path}: not valid JSON (line {exc.lineno}); rebuild the corpus") from None
    if manifest.get("format") not in READABLE_FORMATS:
        raise InputError(f"{manifest_path}: format {manifest.get('format')!r} is not one of {READABLE_FORMATS}; "
                         "rebuild")
    sizes = {split: manifest["splits"][split]["num_tokens"] for split in SPLITS}
    if manifest["format"] != READABLE_FORMATS[0]:
        sizes["heldout"] = manifest["heldout"]["num_tokens"]
    for split, num_tokens in sizes.items():
        shard = path / f"{split}.bin"
        expected = num_tokens * TOKEN_DTYPE.itemsize
        if not shard.is_file() or shard.stat().st_size != expected:
            raise InputError(f"{shard}: missing or not {expected} bytes as the manifest says; rebuild the corpus")
    return Corpus(path, manifest)
