"""Peak-memory probes: torch.cuda's allocator on GPU; on CPU, none that would be honest per call."""

from __future__ import annotations

import gc
from typing import Callable

import torch


def cuda_peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated above what was live before `fn` ran."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def gpu_name(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_name(device)
