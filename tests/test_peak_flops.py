"""MFU's denominator: the dense peak of the GPU torch names, and the precision it computes in."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from lmtrain.callbacks.peak_flops import find_peak, flops_for
from lmtrain.callbacks.throughput import compute_dtype, training_dtype
from lmtrain.strategies.fsdp import FSDP2Strategy

# (what torch.cuda.get_device_name reports, power limit in W or None) -> board
REPORTED = [
    ("NVIDIA H200", 700.0, "H200 SXM"),
    ("NVIDIA H200", None, "H200 SXM"),
    ("NVIDIA H200", 600.0, "H200 NVL"),
    ("NVIDIA H200 NVL", None, "H200 NVL"),
    ("NVIDIA H100 80GB HBM3", 700.0, "H100 SXM"),
    ("NVIDIA H100 PCIe", 350.0, "H100 PCIe"),
    ("NVIDIA H100 NVL", 400.0, "H100 NVL"),
    ("NVIDIA B200", 1000.0, "B200"),
    ("NVIDIA A100-SXM4-80GB", 400.0, "A100"),
    ("NVIDIA A100-SXM4-40GB", None, "A100"),
    ("NVIDIA A100-PCIE-40GB", 250.0, "A100"),
    ("NVIDIA L40S", 350.0, "L40S"),
    ("NVIDIA L4", 72.0, "L4"),
    ("NVIDIA GeForce RTX 4090", 450.0, "RTX 4090"),
]


@pytest.mark.parametrize(("name", "watts", "board"), REPORTED)
def test_each_reported_name_finds_its_board(name: str, watts: float | None, board: str) -> None:
    peak = find_peak(name, watts)
    assert peak is not None and peak.label == board


def test_unknown_devices_have_no_peak() -> None:
    assert find_peak("NVIDIA GeForce GTX 1080") is None
    assert find_peak("Tesla T4", 70.0) is None


def test_dense_figures_not_the_sparsity_ones() -> None:
    h200 = find_peak("NVIDIA H200", 700.0)
    assert h200 is not None
    assert flops_for(h200, torch.bfloat16) == pytest.approx(989.4e12)  # 1979 with sparsity
    default = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert flops_for(h200, torch.float32) == pytest.approx(66.9e12)
        torch.set_float32_matmul_precision("high")
        assert flops_for(h200, torch.float32) == pytest.approx(494.7e12)  # TF32
    finally:
        torch.set_float32_matmul_precision(default)


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16), ("16-mixed", torch.float16),
     ("32-true", torch.float32), ("32", torch.float32)],
)  # fmt: skip
def test_precision_settings_map_to_their_compute_dtype(precision: str, dtype: torch.dtype) -> None:
    assert compute_dtype(precision) == dtype


@pytest.mark.parametrize(
    ("param_dtype", "dtype"), [("bfloat16", torch.bfloat16), (None, torch.float32)]
)
def test_fsdp_mfu_divides_by_the_peak_of_the_dtype_its_blocks_compute_in(
    param_dtype: str | None, dtype: torch.dtype
) -> None:
    """trainer=fsdp keeps precision 32-true (fp32 master weights) and computes the blocks in
    strategy.param_dtype: MFU against the fp32 peak would read ~15x high on an H200 (seen
    there: 'dense torch.float32' before this)."""
    strategy = FSDP2Strategy(param_dtype=param_dtype, process_group_backend="gloo")
    trainer = Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False)
    assert training_dtype(trainer) == dtype
    mixed = Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", logger=False)
    assert training_dtype(mixed) == torch.bfloat16
