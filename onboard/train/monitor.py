"""What a training run reports while it runs: an exact per-step record (JSON lines), a progress bar, and a
graceful stop on Ctrl-C that saves a checkpoint first.

The HF Trainer logs a loss rounded to 4 digits and counts tokens only if asked; the meter wraps
`training_step` instead, so every optimizer step gets the loss the optimizer saw (the sum of its
micro-batch losses, as the Trainer accumulates it), the real tokens (padding excluded) and the trained
tokens.
"""

from __future__ import annotations

import json
import resource
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from onboard.harness.data import IGNORE


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated CUDA memory of this process, or its peak resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class StepMeter(TrainerCallback):
    """Wraps trainer.training_step; writes one JSON line per optimizer step to `log_path`."""

    def __init__(self, trainer, log_path: Path, device: torch.device, keep_until: int = 0,
                 listeners: tuple[Callable[[dict], None], ...] = ()):
        self.device = device
        self.log_path = log_path
        self.listeners = list(listeners)
        self.records: list[dict] = []
        self._loss = None
        self._tokens = self._trained = 0
        self._last = time.perf_counter()
        self._seen = 0
        _truncate_log(log_path, keep_until)  # a resumed run rewrites the steps after its checkpoint
        if keep_until:
            self.records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            self._seen = self.records[-1]["tokens_seen"] if self.records else 0
        original = trainer.training_step

        def training_step(model, inputs, num_items_in_batch=None):
            mask = inputs.get("attention_mask")
            self._tokens += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            self._trained += int((inputs["labels"][..., 1:] != IGNORE).sum()) if "labels" in inputs else 0
            loss = original(model, inputs, num_items_in_batch)
            self._loss = loss.detach().float() if self._loss is None else self._loss + loss.detach().float()
            return loss

        trainer.training_step = training_step

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        loss = float(self._loss) if self._loss is not None else float("nan")
        loss, self._tokens, self._trained = _across_processes(loss, self._tokens, self._trained, self.device)
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self._seen += self._tokens
        record = {
            "step": state.global_step,
            "loss": loss,
            "learning_rate": kwargs["lr_scheduler"].get_last_lr()[0] if kwargs.get("lr_scheduler") else None,
            "tokens": self._tokens,
            "trained_tokens": self._trained,
            "tokens_seen": self._seen,
            "step_seconds": round(seconds, 4),
            "tokens_per_s": round(self._tokens / seconds, 1) if seconds > 0 else None,
            "peak_memory_gib": round(peak_memory_gib(self.device), 3),
            "epoch": round(state.epoch or 0.0, 4),
        }
        self._loss, self._tokens, self._trained = None, 0, 0
        self.records.append(record)
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for listener in self.listeners:
            listener(record)


def _across_processes(loss: float, tokens: int, trained: int, device) -> tuple[float, int, int]:
    """The step's loss and token counts over every process of a distributed run. The Trainer scales each process's
    loss by the world size over the token count of all processes (average_tokens_across_devices), so each rank's
    number is its share times the world size: their mean is the step's loss. Tokens add up."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return loss, tokens, trained
    on = device if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([loss, float(tokens), float(trained)], dtype=torch.float64, device=on)
    dist.all_reduce(values)
    world = dist.get_world_size()
    return float(values[0]) / world, int(values[1]), int(values[2])


def _truncate_log(path: Path, keep_until: int) -> None:
    if not path.exists():
        return
    if keep_until <= 0:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= keep_until]
    path.write_text("".join(line + "\n" for line in kept))


class GracefulStop(TrainerCallback):
    """Ctrl-C (SIGINT) once: finish the current step, save a checkpoint, stop. Twice: stop at once."""

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    @contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class RichProgress:
    """A progress bar with loss, tokens/s and memory; a listener of StepMeter."""

    def __init__(self, console, total_steps: int, start_step: int = 0):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")

    def __call__(self, record: dict) -> None:
        stats = (f"loss {record['loss']:.4f}  {record['tokens_per_s'] or 0:,.0f} tok/s  "
                 f"{record['peak_memory_gib']:.2f} GiB")
        self.progress.update(self.task, completed=record["step"], stats=stats)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
