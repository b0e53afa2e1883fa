"""``dreamforge preflight``: what a curriculum will meet (data, reward, cost), before it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dreamforge.cli.console import fail

STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def preflight(
    config: Annotated[Path | None, typer.Argument(help="dreamforge.config.json (omit with --preset).")] = None,
    preset: Annotated[str | None, typer.Option(help="Start from this preset (under CONFIG, if given).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Check this dataset instead of the config's data.dataset.")] = None,
    samples: Annotated[int, typer.Option(min=1, max=1000, help="Ground truths the reward is tried on.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a curriculum without training: dataset health (class balance, box sizes against the
    location bins, objects per image, bad boxes, images repeated across splits, image sizes,
    label kinds), the reward on perturbed ground truth, and each stage's time and price on its
    Modal GPU. Exit code 1 when a finding is an error, 2 for a config or dataset that cannot load."""
    from dreamforge.executors.modal_limits import DEFAULT_GPU
    from pipeline.config import ConfigError, build_config, load_config
    from pipeline.data.errors import DataError
    from pipeline.preflight import run_preflight
    from pipeline.rewards.base import RewardError

    if config is None and preset is None:
        raise fail("give a config file or --preset NAME", 2)
    try:
        cfg = load_config(config, preset=preset) if config else build_config({}, preset=preset)
        if dataset:
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"dataset": dataset})})
        report = run_preflight(cfg, samples=samples, default_gpu=DEFAULT_GPU)
    except (ConfigError, DataError) as e:
        raise fail(str(e), 2) from None
    except RewardError as e:
        raise fail(str(e)) from None
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("'")) from None
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print(report, cfg.data.dataset)
    if not report["ok"]:
        raise typer.Exit(1)


def _print(report: dict[str, Any], dataset: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ds = report["dataset"]
    images = ", ".join(f"{k} {v}" for k, v in ds["images"].items())
    t = Table(title=f"preflight of {dataset} ({images})")
    for col in ("severity", "check", "finding", "fix"):
        t.add_column(col)
    for f in report["findings"]:
        t.add_row(f["severity"], f["check"], f["message"], f["fix"], style=STYLE[f["severity"]])
    console.print(t)
    if report["reward"] and report["reward"].get("cases"):
        r = report["reward"]
        rt = Table(title=f"reward {r['name']} on {r['samples']} ground truths "
                         f"({r['zero_variance_share']:.0%} zero-variance groups)")  # fmt: skip
        for col in ("case", "mean", "min", "max", "std"):
            rt.add_column(col, justify="left" if col == "case" else "right")
        for row in r["cases"]:
            rt.add_row(row["case"], *(f"{row[k]:.4f}" for k in ("mean", "min", "max", "std")))
        console.print(rt)
    cost = report["cost"]
    ct = Table(title=f"cost on Modal (prices as of {cost['prices_as_of']})")
    for col in ("stage", "gpu", "steps", "s/step", "wall s", "USD", "source"):
        ct.add_column(col, justify="left" if col in ("stage", "gpu", "source") else "right")
    for row in cost["stages"]:
        cells = [row["steps"], row["seconds_per_step"], row["seconds"], row["usd"]]
        ct.add_row(row["stage"], row["gpu"], *("?" if v is None else f"{v:g}" for v in cells), row["source"] or "not measured")
    ct.add_row("job", "", "", "", f"{cost['seconds']:g}", f"{cost['usd']:g}" + ("" if cost["complete"] else "+"), "")
    console.print(ct)
    errors = report["errors"]
    console.print(f"[bold red]{errors} error(s): fix them before training[/]" if errors else "[green]no errors[/]")
