"""Hardware presets, name lookup and measured profiles (sdlaws.hardware)."""

import json

import pytest

from sdlaws.errors import ConfigError, InputError
from sdlaws.hardware import GIB, PRESETS, Hardware, get_preset, load_hardware, match_preset


@pytest.mark.parametrize("spelling, preset", [
    ("h100", "H100-SXM"), ("H100 SXM", "H100-SXM"), ("h100-pcie", "H100-PCIe"), ("H200", "H200"),
    ("rtx 4090", "RTX-4090"), ("A100_40GB", "A100-40GB"), ("a100", "A100-80GB"), ("mi300x", "MI300X"),
    ("l40s", "L40S"), ("L4", "L4"), ("b200", "B200"),
])
def test_preset_lookup_is_case_space_dash_insensitive(spelling, preset):
    assert get_preset(spelling).name == preset
    assert load_hardware(spelling).name == preset


def test_unknown_preset_error_lists_presets():
    with pytest.raises(ConfigError) as err:
        load_hardware("tpu-v5e")
    message = str(err.value)
    assert "tpu-v5e" in message and "H200" in message and "MI300X" in message and "\n" not in message


def test_presets_are_dense_and_cited():
    for hw in PRESETS.values():
        assert hw.source, hw.name
        if hw.peak_fp8_flops_per_s is not None:
            # Every vendor sheet here has FP8 ~ 2 x BF16 on a dense basis (L40S: 733 / 362.05 = 2.02); a sparse
            # figure slipping into one of the two columns would make the ratio 1 or 4.
            assert hw.peak_fp8_flops_per_s / hw.peak_bf16_flops_per_s == pytest.approx(2.0, rel=0.03), hw.name
    assert get_preset("h100").peak_bf16_flops_per_s == 989e12  # not the 1,979 "with sparsity" figure
    assert get_preset("h200").hbm_bytes_per_s == 4.8e12 and get_preset("h200").memory_bytes == 141 * GIB


def test_machine_balance_is_achieved_flops_over_achieved_bandwidth():
    h200 = get_preset("h200")
    assert h200.machine_balance_flops_per_byte == pytest.approx(989e12 * 0.7 / (4.8e12 * 0.8))


def test_dict_round_trip_and_unknown_key():
    hw = get_preset("L40S")
    assert Hardware.from_dict(hw.to_dict()) == hw
    with pytest.raises(InputError, match="unknown key"):
        Hardware.from_dict({**hw.to_dict(), "bandwidth": 1.0})


def test_full_hardware_json(tmp_path):
    path = tmp_path / "hw.json"
    custom = get_preset("h100").with_efficiency(hbm_efficiency=0.5, source="mine")
    path.write_text(json.dumps(custom.to_dict()))
    assert load_hardware(path) == custom


@pytest.mark.parametrize("gpu_name, preset", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA H200", "H200"),
    ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"), ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("AMD Instinct MI300X", "MI300X"),
])
def test_match_preset_by_device_name(gpu_name, preset):
    assert match_preset(gpu_name).name == preset


def test_measured_profile_sets_efficiency_against_matched_preset(tmp_path):
    profile = {"gpu_name": "NVIDIA H100 80GB HBM3", "memory_bytes": 79.6 * GIB, "matmul_flops_per_s": 742e12,
               "hbm_bytes_per_s": 2.9e12, "launch_overhead_s": 3e-6, "extra_key": "ignored"}
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(profile))
    hw = load_hardware(path)
    assert hw.peak_bf16_flops_per_s == 989e12
    assert hw.flops_efficiency == pytest.approx(742 / 989)
    assert hw.hbm_efficiency == pytest.approx(2.9 / 3.35)
    assert hw.launch_overhead_s == 3e-6 and hw.memory_bytes == 79.6 * GIB
    assert "h100.json" in hw.source


def test_measured_profile_of_unknown_device_uses_measured_rates_as_peaks(tmp_path):
    profile = {"gpu_name": "Mystery Accelerator", "memory_bytes": 32 * GIB, "matmul_flops_per_s": 1e14,
               "hbm_bytes_per_s": 1e12, "launch_overhead_s": 5e-6}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(profile))
    hw = load_hardware(path)
    assert (hw.peak_bf16_flops_per_s, hw.hbm_bytes_per_s, hw.flops_efficiency, hw.hbm_efficiency) == (1e14, 1e12, 1, 1)


def test_incomplete_profile_is_an_input_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"gpu_name": "NVIDIA H100"}))
    with pytest.raises(InputError, match="matmul_flops_per_s"):
        load_hardware(path)
