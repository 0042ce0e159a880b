"""Dense peak FLOP/s of the GPUs researchers train on, for MFU, picked by the name torch reports.

Lightning's own table (`lightning.fabric.utilities.throughput`) lacks some of these (H200, B200,
L40S) or lists the with-sparsity figures, twice the dense peak a transformer's matmuls can reach,
so MFU would read half of what it is. The figures below are the dense ones from NVIDIA's
datasheets (half of each "with sparsity" tensor figure). Two boards can report one name with
different clocks (an H200 SXM at 700 W and an H200 NVL at 600 W): the board's power limit then
picks the entry.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import torch

TERA = 1e12


@dataclass(frozen=True)
class DevicePeak:
    """One board: the pattern its torch name matches, an optional power-limit range in watts,
    and its dense peak TFLOP/s by compute dtype."""

    label: str
    name: str
    bf16: float
    fp16: float
    tf32: float
    fp32: float
    min_watts: float = 0.0
    max_watts: float = float("inf")


# Boards whose names collide are told apart by a power range; an explicit name comes first.
PEAKS = (
    DevicePeak("H200 NVL", r"H200 NVL", 835.5, 835.5, 417.5, 60.0),
    DevicePeak("H200 NVL", r"H200", 835.5, 835.5, 417.5, 60.0, max_watts=650),
    DevicePeak("H200 SXM", r"H200", 989.4, 989.4, 494.7, 66.9),
    DevicePeak("H100 NVL", r"H100 NVL", 835.5, 835.5, 417.5, 60.0),
    DevicePeak("H100 PCIe", r"H100 PCIe", 756.5, 756.5, 378.0, 51.2),
    DevicePeak("H100 SXM", r"H100", 989.4, 989.4, 494.7, 66.9),
    DevicePeak("B200", r"B200", 2250.0, 2250.0, 1100.0, 80.0),
    DevicePeak("A100", r"A100", 312.0, 312.0, 156.0, 19.5),
    DevicePeak("L40S", r"L40S", 362.05, 362.05, 183.0, 91.6),
    DevicePeak("L4", r"\bL4\b", 121.0, 121.0, 60.0, 30.3),
    DevicePeak("RTX 4090", r"RTX 4090", 165.2, 165.2, 82.6, 82.6),
)


def find_peak(name: str, watts: float | None = None) -> DevicePeak | None:
    """The table entry for a device `name` (as `torch.cuda.get_device_name` reports it) and its
    power limit in watts. Without the power limit, the name's entry without a power range (its
    usual board)."""
    matches = [peak for peak in PEAKS if re.search(peak.name, name)]
    if watts is not None:
        matches = [peak for peak in matches if peak.min_watts <= watts <= peak.max_watts]
    else:
        unranged = [p for p in matches if p.min_watts == 0 and p.max_watts == float("inf")]
        matches = unranged or matches
    return matches[0] if matches else None


def flops_for(peak: DevicePeak, dtype: torch.dtype) -> float:
    """FLOP/s of `peak` for matmuls computed in `dtype` (float32 counts as TF32 when torch lets
    matmuls use it: `torch.set_float32_matmul_precision("high")`)."""
    if dtype == torch.bfloat16:
        return peak.bf16 * TERA
    if dtype == torch.float16:
        return peak.fp16 * TERA
    if torch.get_float32_matmul_precision() != "highest":
        return peak.tf32 * TERA
    return peak.fp32 * TERA


def power_limit_watts(index: int) -> float | None:
    """The GPU's enforced power limit from nvidia-smi, or None where that cannot be read."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", "--query-gpu=power.limit", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return float(out.strip().split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def device_peak(device: torch.device, dtype: torch.dtype) -> tuple[float, str] | None:
    """(FLOP/s, which entry) for a CUDA device at `dtype`; None for other devices or unknown
    GPUs."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    name = torch.cuda.get_device_name(index)
    watts = power_limit_watts(index)
    peak = find_peak(name, watts)
    if peak is None:
        return None
    limit = f", {watts:.0f} W" if watts is not None else ""
    return flops_for(peak, dtype), f"{peak.label} ({name}{limit}), dense {dtype}"
