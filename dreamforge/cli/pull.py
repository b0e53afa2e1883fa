"""``dreamforge pull JOB_ID``: download a finished job's model through the API, with a progress
bar; an interrupted pull resumes where it stopped (``Range`` on ``GET …/artifacts/{name}``)."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Annotated

import httpx
import typer

from dreamforge.cli.client import ApiError, Client
from dreamforge.cli.console import fail
from dreamforge.settings import SettingsError

NAMES = {"full": "model", "4bit": "model-4bit"}


def pull(
    job_id: str,
    format: Annotated[str, typer.Option("--format", help="release (the one the evaluation chose), full or 4bit.")] = "release",
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to put the model in.")] = Path("."),
) -> None:
    """Download a finished job's model; `dreamforge serve` the folder it prints."""
    if format not in ("release", *NAMES):
        raise fail(f"--format {format!r}: use release, full or 4bit (DreamForge exports no separate adapter)")
    try:
        with Client(timeout=60) as c:
            listing = c.request("GET", f"/api/jobs/{job_id}/artifacts")
            models = [a["name"] for a in listing["artifacts"] if a["kind"] == "model"]
            name = next((a["name"] for a in listing["artifacts"] if a["released"]), "model") if format == "release" else NAMES[format]
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
    typer.echo(f"serve it: dreamforge serve {folder}", err=True)


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
