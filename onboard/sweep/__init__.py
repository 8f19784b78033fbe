"""`onboard sweep`: every causal-LM and image-text-to-text architecture of the installed transformers,
built tiny with random weights and run through the checks, one isolated process per architecture."""

from onboard.sweep.archs import architectures
from onboard.sweep.pool import SweepRecord, read_records, run_sweep

__all__ = ["architectures", "run_sweep", "read_records", "SweepRecord"]
