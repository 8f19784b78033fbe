"""How `onboard train` trains, beyond the Setup the checks judged: one declaration per option.

Light on purpose (no torch): the command line builds `onboard train`'s options from these fields when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from onboard.harness.errors import BadInput


def _opt(default, help: str, *flags: str, cli: bool = True, choices: tuple[str, ...] = ()):
    """A training option: its default and help are `onboard train`'s (onboard.cli builds the option from them)."""
    return field(default=default, metadata={"help": help, "flags": flags, "cli": cli, "choices": choices})


@dataclass
class TrainOptions:
    """How `onboard train` trains, beyond the Setup the checks judged (onboard.harness.setup): one declaration per
    option, its default and help text, from which `onboard train`'s command-line options are built."""

    out: Path = _opt(Path("runs/onboard"), "run folder: adapter, checkpoints, log, report", "--out")
    data: Path | None = _opt(None, "the Setup's data file (None: the session's)", cli=False)
    epochs: float = _opt(1.0, "passes over the data")
    max_steps: int = _opt(-1, "optimizer steps; overrides --epochs when > 0", "--max-steps")
    batch_size: int = _opt(8, "samples per micro-batch (one packed row)", "--batch-size")
    batch_tokens: int | None = _opt(None, "real tokens per micro-batch instead of --batch-size: samples grouped in "
                                    "data order while they fit (packing only)", "--batch-tokens")
    grad_accum: int = _opt(1, "micro-batches per optimizer step", "--grad-accum")
    lr: float = _opt(2e-4, "peak learning rate (linear decay)")
    packing: bool = _opt(True, "pack samples per micro-batch (position_ids restart) or pad them",
                         "--packing/--no-packing")
    cce: str = _opt("auto", "fused CCE loss: auto (on CUDA when verified), on, off", choices=("auto", "on", "off"))
    save_steps: int = _opt(50, "checkpoint every N steps", "--save-steps")
    resume: bool = _opt(False, "continue from the last checkpoint in --out", "--resume")
    nproc: int = _opt(1, "processes: more than 1 relaunches the command under torchrun, one process per GPU (FSDP2 "
                      "through accelerate, sharded by the decoder-layer class) or, on the CPU, gloo processes (DDP: "
                      "accelerate does not shard on the CPU)", "--nproc")
    seed: int = _opt(0, "the Setup's seed", cli=False)

    def __post_init__(self):
        self.out = Path(self.out)
        if self.cce not in ("auto", "on", "off"):
            raise BadInput(f"--cce must be auto, on or off, not {self.cce!r}")
        check_batching(self.batch_tokens, self.packing)
        for name in ("batch_size", "grad_accum", "save_steps", "nproc"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not (self.lr > 0):
            raise BadInput(f"--lr must be positive, not {self.lr}")


TRAIN_FIELDS = {f.name: f for f in fields(TrainOptions)}


def check_batching(batch_tokens: int | None, packing: bool) -> None:
    """A token budget needs packed rows, and a positive number of tokens."""
    if batch_tokens is None:
        return
    if not packing:
        raise BadInput("--batch-tokens groups samples into packed rows: it cannot be used with --no-packing")
    if batch_tokens < 1:
        raise BadInput(f"--batch-tokens must be a positive number of tokens, not {batch_tokens}")


__all__ = ["TRAIN_FIELDS", "TrainOptions", "check_batching"]
