"""``dreamforge pull JOB_ID``: download a finished job's model through the API, with a progress
bar; an interrupted pull resumes where it stopped (``Range`` on ``GET …/artifacts/{name}``)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Annotated

import httpx
import typer

from dreamforge.cli.client import ApiError, Client
from dreamforge.cli.console import fail
from dreamforge.settings import SettingsError

NAMES = {"full": "model", "4bit": "model-4bit", "adapter": "adapter"}


def pull(
    job_id: str,
    format: Annotated[str, typer.Option("--format", help="release (the one the evaluation chose), full, 4bit, "
                                        "or adapter (a LoRA job's adapters alone, for PEFT).")] = "release",
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to put the model in.")] = Path("."),
) -> None:
    """Download a finished job's model; `dreamforge serve` the folder it prints."""
    if format not in ("release", *NAMES):
        raise fail(f"--format {format!r}: use release, full, 4bit or adapter")
    try:
        with Client(timeout=60) as c:
            listing = c.request("GET", f"/api/jobs/{job_id}/artifacts")
            models = [a["name"] for a in listing["artifacts"] if a["kind"] in ("model", "adapter")]
            name = next((a["name"] for a in listing["artifacts"] if a["released"]), "model") if format == "release" else NAMES[format]
            if name == "adapter" and name not in models:
                raise fail(f"job {job_id} trained no LoRA adapters (it trained the whole model; lora: true in the config "
                           "trains adapters); pull --format full")  # fmt: skip
            if name not in models:
                raise fail(f"job {job_id} has no {name}/ (it has: {', '.join(models) or 'no model'}); try --format full")
            output.mkdir(parents=True, exist_ok=True)
            part = output / f"{job_id}-{name}.tar.part"
            _download(c, f"/api/jobs/{job_id}/artifacts/{name}", part)
    except (ApiError, SettingsError) as e:
        raise fail(str(e)) from None
    with tarfile.open(part) as tar:
        tar.extractall(output, filter="data")  # the archive's names are checked: nothing lands outside
    part.unlink()
    folder = output / f"{job_id}-{name}"
    typer.echo(str(folder))
    if name == "adapter":
        typer.echo(f"LoRA adapters over {_adapter_base(folder)}: load that model as base, then "
                   f"PeftModel.from_pretrained(base, {str(folder)!r})", err=True)  # fmt: skip
    else:
        typer.echo(f"serve it: dreamforge serve {folder}", err=True)


def _adapter_base(folder: Path) -> str:
    """The model the adapters were trained over, as PEFT recorded it: a hub id when the stage
    trained the hub model, else the job's own path to the model that stage started from."""
    try:
        return str(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"])
    except (OSError, ValueError, KeyError):
        return "the model their stage started from"


def _download(c: Client, path: str, part: Path) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have:
        typer.echo(f"resuming {part.name} from byte {have}", err=True)
    try:
        with c.http.stream("GET", path, headers=headers) as r:
            if r.status_code == 416:  # the part is already whole
                return
            if r.status_code >= 400:
                r.read()
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                raise ApiError(r.status_code, str(detail))
            if r.status_code == 200:  # the server sent it all: start over
                have = 0
            total = have + int(r.headers.get("content-length", 0))
            with part.open("ab" if have else "wb") as f, Progress(
                TextColumn(part.name.removesuffix(".part")), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True,
                console=Console(stderr=True),
            ) as bar:  # fmt: skip
                task = bar.add_task("pull", total=total, completed=have)
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
                    bar.advance(task, len(chunk))
    except httpx.HTTPError as e:
        raise ApiError(0, f"the download stopped ({e}); run the same command again to resume") from None
