"""Train small decoder-only models from scratch, offline, for controlled scaling experiments.

- :mod:`.corpus`: a tokenized corpus from the Python source already on the machine (train/test split by file,
  uint16 shards, a manifest with hashes as provenance);
- :mod:`.neardup`: MinHash near-duplicate detection of files; :mod:`.evalset`: the held-out set sampled across
  test files;
- :mod:`.tokenizer`: byte-level BPE trained with the ``tokenizers`` library, wrapped for ``transformers``;
- :mod:`.families`: training recipes (``TrainSpec``) and named families;
- :mod:`.trainer`: several ``LlamaForCausalLM`` trained concurrently on one token stream, with log-spaced
  checkpoints (``step-<tokens>/``, each with ``sdlaws_train.json``), a WSD schedule whose cool-down branches
  (``decay-<tokens>/``) are finished runs, and exact resume.

Nothing here imports torch until training starts.
"""

from sdlaws.train.corpus import Corpus, CorpusConfig, build_corpus, load_corpus
from sdlaws.train.families import FAMILIES, TrainSpec, family_specs
from sdlaws.train.trainer import Checkpoint, TrainConfig, TrainResult, list_checkpoints, train_family

__all__ = ["Checkpoint", "Corpus", "CorpusConfig", "FAMILIES", "TrainSpec", "TrainConfig", "TrainResult",
           "build_corpus", "family_specs", "list_checkpoints", "load_corpus", "train_family"]
