"""Corpus builder and tokenizer: split by file, provenance hashes, uint16 shards, reuse, caps, errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from sdlaws.errors import ConfigError, InputError
from sdlaws.train.corpus import CorpusConfig, build_corpus, load_corpus
from sdlaws.train.tokenizer import EOS_TOKEN, check_vocab_size, to_hf_tokenizer, train_tokenizer

@pytest.fixture(scope="module")
def corpus(small_corpus):
    """The session's small corpus (conftest), built from ``source_dir``."""
    return small_corpus


def _documents(corpus, split: str) -> list[list[int]]:
    """Token ids of each file of ``split``, cut at the EOS separators."""
    ids = np.asarray(corpus.tokens(split)).astype(int)
    cuts = np.flatnonzero(ids == corpus.eos_id)
    assert len(ids) and ids[-1] == corpus.eos_id  # every file, the last included, is followed by EOS
    return [ids[a + 1:b].tolist() for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def test_split_is_by_file_and_shards_round_trip(corpus, source_dir):
    files = corpus.manifest["files"]
    splits = {f["split"] for f in files}
    assert splits == {"train", "test"}
    tokenizer = corpus.tokenizer()
    for split in ("train", "test"):
        listed = [f for f in files if f["split"] == split]
        docs = _documents(corpus, split)
        assert len(docs) == len(listed) == corpus.manifest["splits"][split]["num_files"]
        assert sum(f["num_tokens"] for f in listed) == corpus.num_tokens(split) == len(corpus.tokens(split))
        for entry, doc in zip(listed, docs):  # uint16 ids decode back to exactly the file's text
            text = (source_dir / entry["label"].split("/", 1)[1]).read_text()
            assert tokenizer.decode(doc) == text
            assert entry["num_tokens"] == len(doc) + 1


def test_manifest_hashes_and_dedup(corpus, source_dir):
    m = corpus.manifest
    for entry in m["files"]:
        data = (source_dir / entry["label"].split("/", 1)[1]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["num_bytes"]
    assert m["skipped"]["duplicate"] == 1 and m["skipped"]["empty"] == 1
    eos_count = sum(int((np.asarray(corpus.tokens(s)) == corpus.eos_id).sum()) for s in ("train", "test"))
    assert eos_count == len(m["files"])   # EOS only between files, even for special.py
    assert len({e["sha256"] for e in m["files"]}) == len(m["files"])
    for split in ("train", "test"):
        shard = (corpus.path / f"{split}.bin").read_bytes()
        assert hashlib.sha256(shard).hexdigest() == m["splits"][split]["sha256"]
    assert m["tokenizer"]["sha256"] == hashlib.sha256((corpus.path / "tokenizer.json").read_bytes()).hexdigest()
    assert m["versions"]["tokenizers"] and m["created_utc"]


def test_build_is_deterministic_and_reused(corpus, source_dir, small_corpus_config, tmp_path):
    config = CorpusConfig(sources=(str(source_dir),), **small_corpus_config)
    again = build_corpus(tmp_path / "again", config, progress=False)
    assert again.sha256 == corpus.sha256
    assert [f["split"] for f in again.manifest["files"]] == [f["split"] for f in corpus.manifest["files"]]
    assert build_corpus(corpus.path, config, progress=False).sha256 == corpus.sha256  # reused, not rebuilt
    with pytest.raises(ConfigError, match="other settings"):
        build_corpus(corpus.path, CorpusConfig(sources=(str(source_dir),), **{**small_corpus_config, "seed": 1}))


def test_token_cap_keeps_a_prefix_of_the_seeded_order(corpus, source_dir, small_corpus_config, tmp_path):
    capped = build_corpus(tmp_path / "capped", CorpusConfig(sources=(str(source_dir),), max_tokens=2_000,
                                                            **small_corpus_config), progress=False)
    assert 2_000 <= capped.num_tokens("train") < corpus.num_tokens("train")
    full = [f["sha256"] for f in corpus.manifest["files"]]
    kept = [f["sha256"] for f in capped.manifest["files"]]
    assert kept == full[:len(kept)]
    assert capped.manifest["skipped"]["over_cap"] == len(full) - len(kept)


def test_load_rejects_truncated_shard(corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(corpus.path, broken)
    with open(broken / "train.bin", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(InputError, match="train.bin"):
        load_corpus(broken)
    with pytest.raises(InputError, match="manifest"):
        load_corpus(tmp_path)


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build_corpus(tmp_path / "x", CorpusConfig(sources=(str(tmp_path / "missing"),)))
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.py").write_text("x = 1\n")
    with pytest.raises(InputError, match="at least 2"):
        build_corpus(tmp_path / "y", CorpusConfig(sources=(str(tmp_path / "only"),)))
    with pytest.raises(ConfigError, match="vocab"):
        check_vocab_size(70_000)
    with pytest.raises(ConfigError, match="--test-fraction"):
        CorpusConfig(test_fraction=1.5).check()


def test_extra_text_files_are_read_whole(source_dir, small_corpus_config, tmp_path):
    import gzip

    prose = tmp_path / "prose.txt.gz"
    prose.write_bytes(gzip.compress(("A dictionary entry. " * 5000).encode()))
    c = build_corpus(tmp_path / "c", CorpusConfig(sources=(str(source_dir),), extra=(str(prose),),
                                                  max_file_bytes=50_000, **small_corpus_config), progress=False)
    entry = next(f for f in c.manifest["files"] if f["label"] == "extra:prose.txt.gz")
    assert entry["num_bytes"] == 100_000  # decompressed, and exempt from max_file_bytes


def test_tokenizer_trains_and_round_trips_through_transformers():
    texts = ["def add(a, b):\n    return a + b\n", "class Point:\n    x: int = 0\n"] * 50
    tok = train_tokenizer(texts, vocab_size=300)
    assert tok.get_vocab_size() <= 300 and tok.token_to_id(EOS_TOKEN) == 0
    hf = to_hf_tokenizer(tok)
    ids = hf("def add(x, y):\n    return x")["input_ids"]
    assert hf.decode(ids) == "def add(x, y):\n    return x"
    assert hf.eos_token_id == hf.pad_token_id == 0 and max(ids) < 300


def test_manifest_is_plain_json(corpus):
    json.dumps(corpus.to_dict())
    assert "files" not in corpus.to_dict() and corpus.summary().startswith("corpus ")


def test_near_duplicates_are_removed_and_counted(corpus):
    m = corpus.manifest
    labels = {f["label"].split("/", 1)[1] for f in m["files"]}
    assert len(labels & {"bisect.py", "pkg/bisect_edited.py"}) == 1   # one line apart: one copy kept
    assert m["skipped"]["near_duplicate"] == m["dedup"]["near_duplicates"] == 1
    assert m["dedup"]["exact_duplicates"] == 1 and m["dedup"]["near_dup_threshold"] == 0.8


def test_minhash_estimates_jaccard_and_keeps_distinct_files():
    from sdlaws.train.neardup import MinHasher, NearDuplicateIndex, jaccard_estimate, shingle_hashes

    words = [f"w{i}" for i in range(400)]
    a, b = " ".join(words), " ".join(words[:300] + [f"x{i}" for i in range(100)])
    ha, hb = shingle_hashes(a), shingle_hashes(b)
    exact = len(np.intersect1d(ha, hb)) / len(np.union1d(ha, hb))
    hasher = MinHasher(seed=0)
    sa, sb = hasher.signature(ha), hasher.signature(hb)
    assert abs(jaccard_estimate(sa, sb) - exact) < 0.12 and 0.4 < exact < 0.7
    index = NearDuplicateIndex(threshold=0.8)
    assert index.keep(sa) and index.keep(sb)             # similar, but below the threshold: both kept
    assert not index.keep(hasher.signature(shingle_hashes(a + " w0 w1")))   # a copy with a word added
    assert shingle_hashes("x").size == 1 and np.array_equal(shingle_hashes(a), ha)   # short text; stable


def test_heldout_set_is_sampled_across_test_files_with_a_cap(corpus, source_dir, small_corpus_config, tmp_path):
    m = corpus.manifest
    test_files = {f["label"]: f for f in m["files"] if f["split"] == "test"}
    cap, docs = 64, {}
    start = 0
    test = np.asarray(corpus.tokens("test"))
    for f in (f for f in m["files"] if f["split"] == "test"):
        docs[f["label"]] = test[start:start + f["num_tokens"] - 1]
        start += f["num_tokens"]
    config = CorpusConfig(sources=(str(source_dir),), heldout_tokens=500, heldout_file_cap=cap, **small_corpus_config)
    c = build_corpus(tmp_path / "h", config, progress=False)
    h, ids = c.manifest["heldout"], np.asarray(c.heldout_tokens())
    assert h["num_tokens"] == len(ids) == 500 and c.heldout_path.name == "heldout.bin"
    assert h["num_files"] == len(h["chunks"]) >= 500 // cap and h["largest_file_share"] <= cap / 500
    assert len({ch["label"] for ch in h["chunks"]}) == h["num_files"]       # one chunk per file
    position = 0
    for chunk in h["chunks"]:                                               # each chunk is a slice of its file
        size = chunk["num_tokens"] - 1
        assert chunk["label"] in test_files and size <= cap - 1
        expected = docs[chunk["label"]][chunk["offset"]:chunk["offset"] + size]
        assert np.array_equal(ids[position:position + size], expected) and ids[position + size] == c.eos_id
        position += chunk["num_tokens"]
    first_test = next(f["label"] for f in m["files"] if f["split"] == "test")
    assert [ch["label"] for ch in h["chunks"][:3]] != [first_test] * 3       # not the test split's prefix
    other = build_corpus(tmp_path / "h2", CorpusConfig(sources=(str(source_dir),), heldout_tokens=500,
                                                       heldout_file_cap=cap, **{**small_corpus_config, "seed": 3}),
                         progress=False)
    assert other.manifest["heldout"]["chunks"] != h["chunks"]              # the sample follows the seed
    assert c.heldout_name == f"corpus-heldout-{c.sha256[:8]}"


def test_native_sources_and_docs_are_counted_by_type(source_dir, small_corpus_config, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source_dir, src)
    (src / "vec.h").write_text("#pragma once\nstatic inline float dot(const float *a, const float *b, int n);\n")
    (src / "kernel.cu").write_text("__global__ void add(float *x) { x[threadIdx.x] += 1.0f; }\n")
    (src / "README.md").write_text("# Notes\n\nThis folder holds copies of standard-library modules.\n")
    config = CorpusConfig(sources=(str(src),), native_and_docs=True, **small_corpus_config)
    c = build_corpus(tmp_path / "c", config, progress=False)
    types = c.manifest["source_types"]
    assert set(types) == {"python", "native", "docs"}
    assert sum(v["num_files"] for v in types["native"].values()) == 2
    for split in ("train", "test"):
        assert sum(t.get(split, {}).get("num_tokens", 0) for t in types.values()) == c.num_tokens(split)
    python_only = build_corpus(tmp_path / "p", CorpusConfig(sources=(str(src),), **small_corpus_config),
                               progress=False)
    assert set(python_only.manifest["source_types"]) == {"python"}


def test_format_1_corpora_still_load_with_the_test_split_as_heldout(corpus, source_dir, small_corpus_config,
                                                                   tmp_path):
    old = tmp_path / "old"
    shutil.copytree(corpus.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("heldout", "source_types", "dedup"):
        del manifest[key]
    (old / "manifest.json").write_text(json.dumps({**manifest, "format": "sdlaws-corpus/1"}))
    (old / "heldout.bin").unlink()
    c = load_corpus(old)
    assert not c.has_sampled_heldout and c.heldout_path == old / "test.bin"
    assert c.heldout_name == f"corpus-test-{c.sha256[:8]}" and "held-out" not in c.summary()
    with pytest.raises(ConfigError, match="format sdlaws-corpus/1"):
        build_corpus(old, CorpusConfig(sources=(str(source_dir),), **small_corpus_config), progress=False)
