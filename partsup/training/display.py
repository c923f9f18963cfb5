"""What a training shows: the progress display (rank 0 only) and the loss / F1 curves.

Rates are in iterations per second; the ETA in ``h:mm:ss``; curves are PNG files in the run
folder, drawn from ``metrics.jsonl``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from partsup.training.rundir import RunDir


class Display:
    """A rich progress bar on a terminal (iteration, losses, it/s, ETA, last validation
    score: ``score_name``, e.g. F1); plain lines every ``log_every`` iterations otherwise.
    Silent on ranks other than 0."""

    def __init__(self, console: Any, total: int, start: int, enabled: bool,
                 score_name: str = "F1") -> None:
        self.console = console
        self.total, self.start = total, start
        self.enabled = enabled and console is not None
        self.score_name = score_name
        self.val_score: float | None = None
        self.progress = None
        self.task = None
        if self.enabled and getattr(console, "is_terminal", False):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def update(self, iteration: int, stats: dict[str, float], it_s: float, stage: str,
               log_line: bool) -> None:
        """Show ``iteration`` done (``stats`` of :func:`partsup.training.step.train_step`,
        ``it_s`` iterations per second); a plain line only when ``log_line``."""
        if not self.enabled:
            return
        eta = (self.total - iteration) / it_s if it_s > 0 else float("nan")
        val = "-" if self.val_score is None else f"{self.val_score:.3f}"
        parts = "".join(f" {k.removeprefix('loss_')}={v:.4g}" for k, v in stats.items()
                        if k.startswith("loss_"))
        info = (f"{stage} L={stats['loss']:.4g}{parts} {it_s:.2f} it/s val {self.score_name} "
                f"{val}")
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration, info=info)
        elif log_line:
            self.console.print(f"[{iteration}/{self.total}] {info} ETA {_hms(eta)}",
                               highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        """Print a line (above the progress bar when there is one)."""
        if self.enabled:
            (self.progress.console if self.progress is not None else self.console).print(
                text, highlight=False, soft_wrap=True)

    def close(self) -> None:
        """Stop the progress bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def plot_curves(run_dir: RunDir, val_key: str = "val_f1", val_label: str = "validation F1"
                ) -> list[Path]:
    """``loss.png`` (each loss vs iteration) and ``<val_key>.png`` (the validation score
    ``val_key`` of ``metrics.jsonl``, named ``val_label`` on its axis) from ``metrics.jsonl``.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = run_dir.records()
    written: list[Path] = []
    train = [r for r in records if "loss" in r]
    if train:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        its = [r["iteration"] for r in train]
        for key in [k for k in train[0] if k == "loss" or k.startswith("loss_")]:
            vals = [r.get(key) for r in train]
            if any(v for v in vals):
                ax.plot(its, vals, label=key.replace("loss_", "L_") if key != "loss" else "L")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        if all(v > 0 for r in train for v in [r["loss"]]) and len(train) > 1:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        FigureCanvasAgg(fig).print_png(str(run_dir.root / "loss.png"))
        written.append(run_dir.root / "loss.png")
    val = [r for r in records if val_key in r]
    if val:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        ax.plot([r["iteration"] for r in val], [r[val_key] for r in val], marker="o")
        ax.set_xlabel("iteration")
        ax.set_ylabel(val_label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        FigureCanvasAgg(fig).print_png(str(run_dir.root / f"{val_key}.png"))
        written.append(run_dir.root / f"{val_key}.png")
    return written
