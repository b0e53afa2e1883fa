"""What the CLI prints: errors, a job's progress bar, its summary and its log lines."""

from __future__ import annotations

from typing import Any

import typer

from dreamforge.cli.client import Client
from pipeline.stage_table import BY_NAME, REWARD_SCORE, metric_title


def stage_label(stage: str | None) -> str:
    return BY_NAME[stage].label if stage in BY_NAME else stage or ""


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def follow_job(c: Client, job_id: str, *, show_logs: bool = True) -> dict[str, Any]:
    """A rich progress bar across the four stages, with log lines printed above it."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    job: dict[str, Any] = {}
    with Progress(TextColumn("[bold]{task.fields[stage]:<14}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console) as bar:  # fmt: skip
        task = bar.add_task("job", total=100, stage="queued", info="")
        for job, lines in c.follow(job_id):
            if show_logs:
                for ln in lines:
                    style = "red" if ln["level"] == "error" else "yellow" if ln["level"] == "warning" else "dim"
                    stage = f"[{ln['stage']}] " if ln.get("stage") else ""
                    bar.console.print(f"{stage}{ln['message']}", style=style, markup=False, highlight=False)
            stage = job.get("stage") or job["status"]
            latest = (job.get("metrics") or {}).get(job.get("stage") or "", {})
            info = " ".join(f"{k}={v:.4g}" for k, v in latest.items() if k in ("loss", "reward", "train_loss"))
            bar.update(task, completed=job["progress"], stage=stage_label(stage), info=info)
    return job


def print_summary(job: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colour = {"succeeded": "green", "failed": "red", "dead": "red", "cancelled": "yellow"}.get(job["status"], "white")
    console.print(f"job {job['jobId']}: [{colour}]{job['status']}[/]")
    if job.get("error"):
        err = job["error"]
        console.print(f"  {err['kind']} error" + (f" in stage {err['stage']}" if err.get("stage") else "") + f": {err['message']}",
                      markup=False)  # fmt: skip
    result = job.get("result") or {}
    models = result.get("models") or {}
    if models:
        key = result.get("primary_metric", "mean_iou")
        accuracy = [k for k in ("accuracy", "label_accuracy") if any(k in m for m in models.values())]
        cols = (key, "f1_50", *accuracy, "parse_rate", REWARD_SCORE)
        table = Table("model", *(metric_title(k, result.get("reward")) for k in cols), title="held-out metrics")
        for name, m in models.items():
            table.add_row(name, *(f"{m[k]:.3f}" if isinstance(m.get(k), int | float) else "-" for k in cols))
        console.print(table)
        verdict = result.get("verdict") or {}
        if verdict.get("verdict") == "did_not_learn":
            from rich.panel import Panel

            lines = ["; ".join(verdict.get("problems") or [])]
            lines += [f"• {c['cause']}. Try: {c['fix']}" for c in verdict.get("causes") or []]
            console.print(Panel("\n".join(lines), title="the model did not learn", border_style="red"), markup=False)
        release = result.get("release") or {}
        if release.get("reason"):
            console.print(f"released: {release['reason']}", markup=False)
        console.print(f"model: {release.get('release_dir') or result.get('artifacts', {}).get('model')}")


def log_line(ln: dict[str, Any]) -> str:
    stage = f"[{ln['stage']}] " if ln.get("stage") else ""
    return f"{ln['seq']:>6} {ln['level']:<7} {stage}{ln['message']}"
