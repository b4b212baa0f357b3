"""Byte-level BPE tokenizers trained from scratch with the ``tokenizers`` library.

A small vocabulary suits tiny models (the embedding and LM head of a 4096-token vocabulary at width 128 hold
1M parameters, about as many as a 2-layer body) and keeps token ids inside ``uint16`` for the corpus shards.
The trained tokenizer is wrapped as a ``transformers.PreTrainedTokenizerFast`` and saved into every model
directory, so ``sdlaws measure`` loads the models like any Hugging Face checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from sdlaws.errors import ConfigError, InputError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

#: The only special token: separates files in the shards and ends generations (GPT-2's convention).
EOS_TOKEN = "<|endoftext|>"
#: 256 byte symbols + the EOS token must fit, and ids must fit the uint16 shards.
MIN_VOCAB_SIZE = 258
MAX_VOCAB_SIZE = 65535


def check_vocab_size(vocab_size: int) -> int:
    """Return ``vocab_size`` or raise :class:`ConfigError` when it does not fit byte-level BPE and uint16."""
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ConfigError(f"--vocab {vocab_size} is out of range; use {MIN_VOCAB_SIZE}..{MAX_VOCAB_SIZE} "
                          "(byte-level BPE needs 256 byte symbols, shards store uint16 ids)")
    return vocab_size


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2,
                    length: int | None = None) -> "Tokenizer":
    """Train a byte-level BPE tokenizer on ``texts``.

    Parameters
    ----------
    texts : iterable of str
        Training documents (e.g. whole source files); consumed once.
    vocab_size : int
        Final vocabulary size, EOS included (258..65535).
    min_frequency : int
        A pair is merged only if it occurs at least this often.
    length : int, optional
        Number of documents, for the library's own bookkeeping.

    Returns
    -------
    tokenizers.Tokenizer
        GPT-2-style byte-level BPE (no prefix space) whose id 0 is :data:`EOS_TOKEN`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer, length=length)
    return tokenizer


def eos_id(tokenizer: "Tokenizer") -> int:
    """Id of :data:`EOS_TOKEN` in ``tokenizer`` (raises :class:`InputError` if it has none)."""
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise InputError(f"tokenizer has no {EOS_TOKEN!r} token; rebuild the corpus with `sdlaws train corpus`")
    return token_id


def load_tokenizer(path: str | Path) -> "Tokenizer":
    """Read a ``tokenizer.json`` written by :func:`save_tokenizer`."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no tokenizer.json; build the corpus first (sdlaws train corpus --out DIR)")
    return Tokenizer.from_file(str(path))


def save_tokenizer(tokenizer: "Tokenizer", path: str | Path) -> str:
    """Write ``tokenizer`` as JSON to ``path`` (atomically); return the file's sha256 (recorded in the corpus
    manifest)."""
    from sdlaws.io import save_text

    text = tokenizer.to_str(pretty=True)  # the bytes Tokenizer.save writes
    save_text(text, path)
    return hashlib.sha256(text.encode()).hexdigest()


def to_hf_tokenizer(tokenizer: "Tokenizer") -> "PreTrainedTokenizerFast":
    """Wrap ``tokenizer`` for ``transformers`` (EOS doubles as BOS and PAD, as for GPT-2)."""
    from transformers import PreTrainedTokenizerFast

    eos_id(tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=None, model_max_length=1_000_000)
