"""HF assisted generation baseline: pinned draft settings, exact token counts, settings restored."""

import pytest

from sdlaws.errors import ConfigError
from sdlaws.measure.hf_baseline import hf_assisted_generate
from sdlaws.measure.models import load_model


def test_hf_assisted_generate_pins_gamma_and_counts_tokens():
    target, _, _ = load_model("random:tiny?num_hidden_layers=1", dtype="fp32", device="cpu", seed=0)
    draft, _, _ = load_model("random:tiny?num_hidden_layers=1", dtype="fp32", device="cpu", seed=1)
    keys = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    before = [getattr(draft.generation_config, k) for k in keys]
    seen = []
    original = target.generate

    def spy(*args, **kwargs):
        cfg = kwargs["assistant_model"].generation_config
        seen.append((cfg.num_assistant_tokens, cfg.num_assistant_tokens_schedule, cfg.assistant_confidence_threshold))
        return original(*args, **kwargs)
    target.generate = spy
    result = hf_assisted_generate(target, draft, [[1, 2, 3], [4, 5, 6, 7, 8]], gamma=3, max_new_tokens=7)
    assert result.num_new_tokens == 2 * 7 and result.num_prompts == 2 and result.total_time_s > 0
    assert seen == [(3, "constant", 0.0)] * 3  # warm-up + 2 timed prompts
    assert [getattr(draft.generation_config, k) for k in keys] == before  # restored after the call
    assert result.to_dict()["tokens_per_s"] == pytest.approx(14 / result.total_time_s)
    with pytest.raises(ConfigError):
        hf_assisted_generate(target, draft, [], gamma=3, max_new_tokens=7)
