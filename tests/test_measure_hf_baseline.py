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


def test_hf_static_generate_times_decode_apart_from_prefill():
    from sdlaws.measure.hf_baseline import hf_static_generate

    model, _, _ = load_model("random:tiny?num_hidden_layers=1", dtype="fp32", device="cpu", seed=0)
    batches = [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [3, 2, 1]]]
    result = hf_static_generate(model, batches, max_new_tokens=5)
    assert (result.num_sequences, result.batch_size, result.num_batches) == (4, 2, 2)
    # both are wall times of separate generate calls: on a tiny CPU model their order is noise, not a property
    assert result.prefill_time_s > 0 and result.total_time_s > 0
    assert result.to_dict()["decode_step_s"] == pytest.approx((result.total_time_s - result.prefill_time_s) / 8)
    for bad in ([], [[[1, 2], [3]]], [[[1]], [[2], [3]]]):  # none, ragged prompts, unequal batches
        with pytest.raises(ConfigError):
            hf_static_generate(model, bad, max_new_tokens=5)
    with pytest.raises(ConfigError):
        hf_static_generate(model, batches, max_new_tokens=1)
