"""Built-in prompt sets and JSONL prompt files: non-empty, seeded, truncated, templated, clear errors."""

import pytest

from measure_helpers import tiny_tokenizer
from sdlaws.errors import ConfigError, InputError
from sdlaws.measure.prompts import BUILTIN_SETS, SUMMARIZE_INSTRUCTION, load_prompts, text_prompts


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("name", ["humaneval", "code", "math", "summarize"])
def test_text_sets_are_non_empty_and_seeded(name):
    first = text_prompts(name, seed=0, limit=6)
    assert len(first) == 6 and all(isinstance(t, str) and t.strip() for t in first)
    assert text_prompts(name, seed=0, limit=6) == first
    assert text_prompts(name, seed=1, limit=6) != first


def test_set_contents():
    assert all(p.startswith(("def ", "async def ")) and ('"""' in p or "'''" in p)
               for p in text_prompts("code", limit=10))
    assert all(p.startswith(SUMMARIZE_INSTRUCTION) for p in text_prompts("summarize", limit=5))
    assert any("def " in p for p in text_prompts("humaneval", limit=5))
    assert len(set(text_prompts("math", limit=50))) == 50


def test_humaneval_has_all_164_problems():
    assert len(text_prompts("humaneval")) == 164


@pytest.mark.parametrize("name", [n for n in BUILTIN_SETS if n != "random"])
def test_tokenised_sets_are_truncated_to_their_last_tokens(name, tok):
    full = load_prompts(name, tok, num_prompts=4, seed=0, max_prompt_len=10_000, chat_template=False)
    short = load_prompts(name, tok, num_prompts=4, seed=0, max_prompt_len=12, chat_template=False)
    assert short.name == name and len(short.token_ids) == 4
    for a, b in zip(full.token_ids, short.token_ids):
        assert b == a[-12:]


def test_chat_template_is_applied_only_when_asked_and_present():
    plain = tiny_tokenizer()
    chat = tiny_tokenizer(chat_template=True)
    user, bot = chat.convert_tokens_to_ids(["<|user|>", "<|bot|>"])
    templ = load_prompts("math", chat, num_prompts=2, max_prompt_len=512).token_ids
    assert all(ids[0] == user and ids[-1] == bot for ids in templ)
    raw = load_prompts("math", chat, num_prompts=2, max_prompt_len=512, chat_template=False).token_ids
    assert raw[0] != templ[0] and user not in raw[0]
    assert load_prompts("math", plain, num_prompts=2, max_prompt_len=512).token_ids == raw


def test_random_set_needs_no_tokenizer():
    a = load_prompts("random", num_prompts=3, seed=0, max_prompt_len=7, vocab_size=50)
    assert [len(x) for x in a.token_ids] == [7, 7, 7]
    assert all(0 <= t < 50 for x in a.token_ids for t in x)
    assert load_prompts("random", num_prompts=3, seed=0, max_prompt_len=7, vocab_size=50) == a
    with pytest.raises(ConfigError, match="use --prompts random"):
        load_prompts("math", None, num_prompts=1)


def test_jsonl_file_and_cycling(tmp_path, tok):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hello world"}\n\n{"text": "def f(x):"}\n')
    got = load_prompts(str(path), tok, num_prompts=5, chat_template=False)
    assert got.name == str(path) and len(got.token_ids) == 5
    assert got.token_ids[:2] == got.token_ids[2:4]  # 2 prompts repeated in their seeded order


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "ok"}\n{bad json}\n', "line 2: not valid JSON"),
    ('{"prompt": "ok"}\n{"question": "x"}\n', 'line 2: needs a non-empty "prompt" or "text"'),
    ('["a list"]\n', "line 1: needs"),
    ("\n\n", "is empty"),
])
def test_jsonl_errors_name_the_line(tmp_path, tok, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_prompts(str(path), tok, num_prompts=1)
    assert "\n" not in str(err.value)


def test_missing_prompt_file(tok, tmp_path):
    with pytest.raises(InputError, match="no such prompt file"):
        load_prompts(str(tmp_path / "missing.jsonl"), tok, num_prompts=1)
