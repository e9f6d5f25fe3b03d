"""Plots of training: the loss curve of a run.

In: the rows of a run's metrics (dicts with ``step`` and ``loss`` and/or ``valid_loss``). Out: a
PNG with the train and validation loss per token against the step.
"""
from __future__ import annotations

from pathlib import Path
from typing import List


def plot_loss_curve(rows: List[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    valid = [(r["step"], r["valid_loss"]) for r in rows if "valid_loss" in r and r["valid_loss"] == r["valid_loss"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train (per token)")
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation (per token)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
