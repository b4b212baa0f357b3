"""Test doubles shared by the ``tests/test_measure_*.py`` modules (no network, CPU, seconds).

- :func:`tiny_tokenizer`: a byte-level BPE tokenizer trained in-process on a few lines of text, optionally with
  a chat template, wrapped as a transformers fast tokenizer.
- :func:`tiny_model_dir`: a saved random ``random:tiny`` model (+ tokenizer, + optional ``sdlaws_train.json``),
  i.e. what a local model directory looks like to ``sdlaws measure``.
- :class:`FakeDecoder`: a decoder double with deterministic counts (real ``DecodeStats``) that can be told to
  fail on some configurations.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"
_TRAIN_TEXT = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
               "Summarize the following: numbers, words and code.", "for i in range(10):\n    print(i)\n"] * 20


def tiny_tokenizer(*, chat_template: bool = False, vocab_size: int = 300):
    """A ~300-token byte-level BPE tokenizer (fits the 512-token ``random:tiny`` vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<|user|>", "<|bot|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TRAIN_TEXT, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def tiny_model_dir(path: Path, *, spec: str = "random:tiny?num_hidden_layers=1", seed: int = 0,
                   tokenizer: bool = True, train_meta: dict | None = None) -> Path:
    """Save a random model (fp32) as a Hugging Face directory; returns ``path``."""
    from sdlaws.measure.models import load_model

    model, _, _ = load_model(spec, dtype="float32", device="cpu", seed=seed)
    model.save_pretrained(path)
    if tokenizer:
        tiny_tokenizer().save_pretrained(path)
    if train_meta is not None:
        (path / "sdlaws_train.json").write_text(json.dumps(train_meta))
    return path


class FakeDecoder:
    """Decoder double: each ``generate`` reports ``len(prompts) * max_new_tokens`` tokens in fixed times.

    Build it through :func:`fake_factory`. ``generate`` raises ``RuntimeError`` when the configuration's
    num_spec_tokens is in ``fail_num_spec_tokens``.
    """

    def __init__(self, run, config, fail_num_spec_tokens):
        self.run, self.config, self.fail_num_spec_tokens = run, config, fail_num_spec_tokens

    def warmup(self, prompts, batch_size=None):
        self.generate(prompts)

    def serve(self, prompts, batch_size):
        """Continuous batching: the same counts as one batch of every prompt, ``ceil(n / batch_size)`` batches."""
        tokens, stats = self.generate(prompts)
        stats.num_batches = -(-len(prompts) // batch_size)
        return tokens, stats

    def generate(self, prompts):
        from sdlaws.measure.engine import DecodeStats

        if self.run.num_spec_tokens in self.fail_num_spec_tokens:
            raise RuntimeError(f"simulated failure at num_spec_tokens={self.run.num_spec_tokens}")
        n, steps = self.run.num_spec_tokens, self.config.max_new_tokens - 1
        drafts = len(prompts) * steps if n else 0
        stats = DecodeStats(num_batches=1, num_prompt_tokens=sum(map(len, prompts)),
                            num_new_tokens=len(prompts) * self.config.max_new_tokens, num_steps=steps,
                            num_drafts=drafts, num_draft_tokens=drafts * n, num_accepted_tokens=0,
                            prefill_time_s=0.01, draft_time_s=0.02 if n else 0.0, verify_time_s=0.05,
                            total_time_s=0.1)
        return [[0] * self.config.max_new_tokens for _ in prompts], stats


def fake_factory(fail_num_spec_tokens=()):
    """``(factory, calls)``: a ``DecoderFactory`` building :class:`FakeDecoder` s, and the list of the
    ``(method, num_spec_tokens, batch_size)`` of every decoder it built."""
    calls = []

    def factory(target, draft, run, config, max_prompt_len):
        calls.append((run.method, run.num_spec_tokens, run.batch_size))
        return FakeDecoder(run, config, set(fail_num_spec_tokens))
    return factory, calls
