"""What a run shows and logs: rank 0's console lines, tables, progress bar and metrics.jsonl.

Training and prediction print through a `Reporter`, so the other ranks of a job stay silent
without any patching of `print`, and a log file (no terminal) still gets whole lines.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Iterator, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mrc.dist import DistContext
from mrc.io import atomic_write_text


class Sink(Protocol):
    """Another place metrics entries go (TensorBoard); rank 0 only."""

    def __call__(self, entry: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Reporter:
    """Everything rank 0 prints (to stderr) or appends to metrics.jsonl; silent on the other ranks."""

    def __init__(self, ctx: DistContext, metrics_path: Path | None = None):
        self.enabled = ctx.is_main
        self.console = Console(stderr=True)
        self.metrics_path = metrics_path
        self.progress: Progress | None = None
        self.task = None
        self.sinks: list[Sink] = []

    def say(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)  # log files keep whole lines

    def restart_metrics(self, keep_through_step: int) -> None:
        """Drop metrics.jsonl entries past `keep_through_step` (a resumed run logs them again; 0 = a fresh run)."""
        if not self.enabled or self.metrics_path is None or not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", math.inf) <= keep_through_step:
                    kept.append(line + "\n")
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
        atomic_write_text(self.metrics_path, "".join(kept))

    def record(self, entry: dict[str, Any]) -> None:
        if self.enabled and self.metrics_path is not None:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if self.enabled:
            for sink in self.sinks:
                sink(entry)

    def close_sinks(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    @contextlib.contextmanager
    def progress_bar(self, total_steps: int, done: int) -> Iterator[None]:
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
                   TextColumn("{task.fields[tokens_per_s]} tok/s"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, disable=not self.enabled) as progress:
            self.progress = progress
            self.task = progress.add_task("train", total=total_steps, completed=done, epoch="-", loss="-",
                                          lr="-", tokens_per_s="-")
            try:
                yield
            finally:
                self.progress = None

    def log_line(self, entry: dict[str, Any], total_steps: int) -> None:
        """In a log file (no live progress bar) each logging step also gets a line."""
        if self.enabled and not self.console.is_terminal:
            self.say(f"step {entry['step']:,}/{total_steps:,} epoch {entry['epoch']:.2f} loss {entry['loss']:.4f} "
                     f"lr {entry['lr']:.2e} grad_norm {entry['grad_norm']:.3f} {entry['tokens_per_s']:,.0f} tok/s")

    def advance(self, step: int, **fields: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, **fields)

    def table(self, table: Table) -> None:
        if self.enabled:
            self.console.print(table)
