"""What vLLM, TensorRT-LLM and SGLang accept, written from their documentation and code (not from sdlaws), to
check `sdlaws plan export` files against. Each ``parse_*`` reads an exported file and raises on anything the
engine would reject.

- vLLM: `vllm serve --config` YAML keys are long option names (docs.vllm.ai/en/latest/configuration/
  serve_args.html); `SpeculativeConfig` (vllm/config/speculative.py): `num_speculative_tokens` > 0, `method` a
  `SpeculativeMethod`, `num_speculative_tokens_per_batch_size` a list of inclusive (start, end, K) with every
  K <= num_speculative_tokens (docs.vllm.ai/en/v0.25.0/features/speculative_decoding/
  dynamic_speculative_decoding/); ranges positive, sorted, non-overlapping, the first starting at 1
  (vllm/v1/spec_decode/dynamic/utils.py).
- TensorRT-LLM: `speculative_config` with `decoding_type` one of MTP, Eagle3, NGram, DraftTarget, PARD, DFlash,
  SA (docs/source/features/speculative-decoding.md); `max_draft_len` >= 0; `draft_len_schedule` dict[int, int]
  that must map batch size 1 to max_draft_len (tensorrt_llm/llmapi/llm_args.py, `DecodingBaseConfig`).
- SGLang: `--speculative-algorithm`, `--speculative-draft-model-path` (required for EAGLE/EAGLE3/STANDALONE),
  `--speculative-num-steps`, `--speculative-eagle-topk`, `--speculative-num-draft-tokens`
  (docs.sglang.io/advanced_features/speculative_decoding.html); with top-k 1 the draft tokens are steps + 1
  (python/sglang/srt/server_args.py adjusts any other value).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

import yaml

VLLM_METHODS = {"ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "eagle", "eagle3", "mtp"}
TRTLLM_DECODING_TYPES = {"MTP", "Eagle3", "NGram", "DraftTarget", "PARD", "DFlash", "SA"}
SGLANG_ALGORITHMS = {"EAGLE", "EAGLE3", "STANDALONE", "NGRAM"}


@dataclass
class VllmSpeculativeConfig:
    num_speculative_tokens: int
    method: Optional[str] = None
    model: Optional[str] = None
    num_speculative_tokens_per_batch_size: Optional[list] = None

    def __post_init__(self):
        assert isinstance(self.num_speculative_tokens, int) and self.num_speculative_tokens > 0
        assert self.method is None or self.method in VLLM_METHODS, self.method
        table = self.num_speculative_tokens_per_batch_size
        if table is None:
            return
        assert isinstance(table, list) and table, table
        previous_end = 0
        for entry in table:
            start, end, k = entry  # exactly three items
            assert all(isinstance(v, int) for v in entry), entry
            assert 1 <= start <= end and start > previous_end, entry
            assert 0 <= k <= self.num_speculative_tokens, entry
            previous_end = end
        assert table[0][0] == 1, table


@dataclass
class TrtllmSpeculativeConfig:
    decoding_type: str
    max_draft_len: int
    speculative_model: Optional[str] = None
    draft_len_schedule: Optional[dict] = field(default=None)

    def __post_init__(self):
        assert self.decoding_type in TRTLLM_DECODING_TYPES, self.decoding_type
        assert isinstance(self.max_draft_len, int) and self.max_draft_len >= 0
        if self.draft_len_schedule is not None:
            assert all(isinstance(k, int) and k >= 1 and isinstance(v, int) and v >= 0
                       for k, v in self.draft_len_schedule.items()), self.draft_len_schedule
            assert self.draft_len_schedule.get(1) == self.max_draft_len, self.draft_len_schedule


@dataclass
class SglangSpeculativeArgs:
    speculative_algorithm: str
    speculative_draft_model_path: Optional[str]
    speculative_num_steps: int
    speculative_eagle_topk: int
    speculative_num_draft_tokens: int

    def __post_init__(self):
        assert self.speculative_algorithm in SGLANG_ALGORITHMS, self.speculative_algorithm
        assert self.speculative_algorithm == "NGRAM" or self.speculative_draft_model_path
        assert self.speculative_num_steps >= 1 and self.speculative_eagle_topk >= 1
        assert self.speculative_num_draft_tokens >= 2
        if self.speculative_eagle_topk == 1:
            assert self.speculative_num_draft_tokens == self.speculative_num_steps + 1


def parse_vllm(text: str) -> VllmSpeculativeConfig:
    config = yaml.safe_load(text)
    assert set(config) == {"speculative-config"}, config
    return VllmSpeculativeConfig(**json.loads(config["speculative-config"]))


def parse_trtllm(text: str) -> TrtllmSpeculativeConfig:
    config = yaml.safe_load(text)
    assert set(config) == {"speculative_config"}, config
    return TrtllmSpeculativeConfig(**config["speculative_config"])


def parse_sglang(text: str) -> dict[tuple[int, int], Optional[SglangSpeculativeArgs]]:
    """{(lo, hi): flags (None = speculation off)} of an export; the brackets must tile 1..the last."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    for name, kind in (("algorithm", str), ("draft-model-path", str), ("num-steps", int), ("eagle-topk", int),
                       ("num-draft-tokens", int)):
        parser.add_argument(f"--speculative-{name}", type=kind, required=True)
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.split("=", 1)
        lo, hi = map(int, re.fullmatch(r"SGLANG_SPECULATIVE_ARGS_(\d+)_(\d+)", name).groups())
        words = shlex.split(value)[0].split() if shlex.split(value) and shlex.split(value)[0] else []
        found[(lo, hi)] = SglangSpeculativeArgs(**vars(parser.parse_args(words))) if words else None
    ranges = sorted(found)
    assert ranges[0][0] == 1 and all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), ranges
    return found
