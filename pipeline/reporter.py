"""One interface for everything a running job tells the outside world.

Stages report log lines, metrics per step and progress 0–100 across the four stages through a
``Reporter``. Standalone runs use ``ConsoleReporter`` (rich progress bar); the service plugs a
MongoDB reporter into the same interface, and ``MetricsFileReporter`` keeps a JSONL copy next
to the artifacts. ``should_stop`` lets the service cancel a running stage within seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from pipeline.stage_table import STAGE_TABLE


def overall_progress(stage: str, fraction: float) -> float:
    done = 0.0
    for s in STAGE_TABLE:
        if s.name == stage:
            return round(done + s.weight * min(max(fraction, 0.0), 1.0), 2)
        done += s.weight
    return 100.0


class Reporter(Protocol):
    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None: ...
    def metric(self, stage: str, step: int, values: dict[str, float]) -> None: ...
    def progress(self, stage: str, fraction: float) -> None: ...
    def stage_state(self, stage: str, state: str, **info: Any) -> None: ...
    def should_stop(self) -> bool: ...
    def should_pause(self) -> bool: ...
    def close(self) -> None: ...


class BaseReporter:
    """A reporter that does nothing; subclasses override what they record."""

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        pass

    def metric(self, stage: str, step: int, values: dict[str, float]) -> None:
        pass

    def progress(self, stage: str, fraction: float) -> None:
        pass

    def stage_state(self, stage: str, state: str, **info: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def should_pause(self) -> bool:
        """Checkpoint and stop, to resume later (a budget's cap): see :class:`PauseRequest`."""
        return False

    def close(self) -> None:
        pass


class MultiReporter(BaseReporter):
    def __init__(self, *reporters: Reporter | None) -> None:
        self.reporters = [r for r in reporters if r is not None]

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        for r in self.reporters:
            r.log(message, level=level, stage=stage)

    def metric(self, stage: str, step: int, values: dict[str, float]) -> None:
        for r in self.reporters:
            r.metric(stage, step, values)

    def progress(self, stage: str, fraction: float) -> None:
        for r in self.reporters:
            r.progress(stage, fraction)

    def stage_state(self, stage: str, state: str, **info: Any) -> None:
        for r in self.reporters:
            r.stage_state(stage, state, **info)

    def should_stop(self) -> bool:
        return any(r.should_stop() for r in self.reporters)

    def should_pause(self) -> bool:
        return any(r.should_pause() for r in self.reporters if hasattr(r, "should_pause"))

    def close(self) -> None:
        for r in self.reporters:
            r.close()


PAUSE_FILE = "PAUSE"  # in the output folder: the service asks the running stage to checkpoint and stop
PAUSED_EXIT = 75  # pipeline.run's exit status for a stage that did (EX_TEMPFAIL: try again later)


class PauseRequest(BaseReporter):
    """Pause requests from the service: the file ``PAUSE_FILE`` in the output folder (a stage runs
    in another process, perhaps another machine sharing the folder). Stat'ed at most once a second."""

    def __init__(self, out: Path) -> None:
        self.path = out / PAUSE_FILE
        self._seen, self._at = False, 0.0

    def should_pause(self) -> bool:
        if not self._seen and time.monotonic() - self._at >= 1.0:
            self._at = time.monotonic()
            self._seen = self.path.exists()
        return self._seen


class MetricsFileReporter(BaseReporter):
    """Appends every metric point and stage transition to ``events.jsonl`` in the output folder."""

    def __init__(self, path: Path, tag: dict[str, Any] | None = None) -> None:
        self.path = path
        self.tag = tag or {}  # added to every event
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._last_progress: tuple[str, float] = ("", -1.0)

    def _write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps({**obj, **self.tag}) + "\n")
        self._fh.flush()

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        self._write({"t": time.time(), "type": "log", "level": level, "stage": stage, "message": message})

    def metric(self, stage: str, step: int, values: dict[str, float]) -> None:
        self._write({"t": time.time(), "type": "metric", "stage": stage, "step": step, **values})

    def stage_state(self, stage: str, state: str, **info: Any) -> None:
        self._write({"t": time.time(), "type": "stage", "stage": stage, "state": state, **info})

    def progress(self, stage: str, fraction: float) -> None:
        # Stages report progress every step; the service needs it to about a percent.
        if stage != self._last_progress[0] or abs(fraction - self._last_progress[1]) >= 0.01 or fraction >= 1.0:
            self._last_progress = (stage, fraction)
            self._write({"t": time.time(), "type": "progress", "stage": stage, "fraction": round(fraction, 4)})

    def close(self) -> None:
        self._fh.close()


class ConsoleReporter(BaseReporter):
    """Rich progress bar across the four stages plus log lines above it."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.quiet = quiet
        self._progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
            disable=quiet,
        )
        self._task = self._progress.add_task("job", total=100, stage="starting", info="")
        self._progress.start()
        self._last: dict[str, float] = {}

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        style = {"warning": "yellow", "error": "bold red"}.get(level, "")
        prefix = f"[{stage}] " if stage else ""
        self.console.print(f"{prefix}{message}", style=style, highlight=False, markup=False)

    def metric(self, stage: str, step: int, values: dict[str, float]) -> None:
        shown = {k: v for k, v in values.items() if k in ("loss", "reward", "mean_iou", "lr")}
        if shown:
            info = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            self._progress.update(self._task, info=f"step {step} {info}")

    def progress(self, stage: str, fraction: float) -> None:
        self._progress.update(self._task, completed=overall_progress(stage, fraction), stage=stage)

    def stage_state(self, stage: str, state: str, **info: Any) -> None:
        if state in ("completed", "skipped", "failed"):
            extra = f" in {info['seconds']:.1f}s" if "seconds" in info else ""
            self.log(f"stage {stage} {state}{extra}", stage=stage, level="error" if state == "failed" else "info")

    def close(self) -> None:
        self._progress.stop()
