"""The loss curve of a training run as a PNG (matplotlib, no display needed).

matplotlib is the `[plot]` extra, not a base dependency: with what it brings (fontTools, pillow, kiwisolver) it
is about 100 MB of a CPU install for one picture; train_log.jsonl holds every step either way."""

from __future__ import annotations

from pathlib import Path

PLOT_INSTALL = 'pip install "matplotlib>=3.8"'


def loss_curve(records: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, loss_ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    loss_ax.plot(steps, [r["loss"] for r in records], color="tab:blue", marker="." if len(steps) < 50 else None)
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss (nats / trained token)", color="tab:blue")
    speed_ax = loss_ax.twinx()
    speed_ax.plot(steps, [r["tokens_per_s"] or 0 for r in records], color="tab:gray", alpha=0.5, linewidth=1)
    speed_ax.set_ylabel("tokens / s", color="tab:gray")
    loss_ax.set_title(title, fontsize=10)
    loss_ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
