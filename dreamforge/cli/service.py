"""``dreamforge`` commands that talk to the service or start it: up, worker, train, status,
logs, cancel, approve, jobs, demo. Registered on the Typer app by ``dreamforge.cli.app``."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from dreamforge.cli.client import STACK_FILE, ApiError, Client, stack_info
from dreamforge.cli.console import fail, follow_job, log_line, print_summary, stage_label
from dreamforge.local.stack import start_stack
from dreamforge.settings import Settings, SettingsError, dashboard_page
from pipeline.budget import spend_text


def _client() -> Client:
    try:
        return Client()
    except (ApiError, SettingsError) as e:
        raise fail(str(e), 2 if isinstance(e, SettingsError) else 1) from None


def _settings() -> Settings:
    try:
        return Settings()
    except SettingsError as e:
        raise fail(str(e), 2) from None


def parse_epochs(first: str | None, extra: list[str]) -> list[str]:
    """``--epochs 5 3 2`` (as the docs write it), ``--epochs 5,3,2`` or ``--epochs "5 3 2"``."""
    words = ([first] if first else []) + list(extra)
    out = [w for word in words for w in word.replace(",", " ").split()]
    for w in out:
        try:
            float(w)
        except ValueError:
            raise ValueError(f"--epochs takes numbers (stage 1, 2 and RL), got {w!r}") from None
    if len(out) > 3:
        raise ValueError(f"--epochs takes at most three numbers (stage 1, 2 and RL), got {len(out)}")
    return out


def up(
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 1,
    dashboard: Annotated[bool, typer.Option(help="Start the Streamlit dashboard too.")] = True,
    home: Annotated[Path | None, typer.Option(help="Data directory (default $DREAMFORGE_HOME or ./.dreamforge).")] = None,
) -> None:
    """Start the local stack: embedded database, API, workers and dashboard, until Ctrl-C."""
    home = home or _settings().home
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    stack = _start(home, workers, dashboard)
    try:
        typer.echo(f"DreamForge is up.\n  API:       {stack.api_url}  (docs at {stack.api_url}/docs)")
        if stack.dashboard_url:
            typer.echo(f"  dashboard: {dashboard_page(stack.dashboard_url, 'train')}")
        typer.echo(f"  API key:   {stack.dev_key}  (dev project; also in {home / 'dev-api-key'})")
        typer.echo(f"  database:  {stack.uri}\nPress Ctrl-C to stop.")
        # Wake up now and then: Ctrl-C may be delivered to one of the stack's threads, and a
        # main thread blocked in an untimed wait would then never see it (seen: `up` ignored
        # SIGINT for 10 minutes).
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping…")
        stack.stop()
        (home / STACK_FILE).unlink(missing_ok=True)


def worker() -> None:
    """Run a worker: claim jobs from MongoDB ($MONGODB_URI, else the local stack's) and train them."""
    from dreamforge.worker import main as worker_main  # the worker's imports (pipeline, executors) load only here

    if not os.environ.get("MONGODB_URI"):
        info = stack_info()
        if not info:
            raise fail("set MONGODB_URI or start the local stack with `dreamforge up`")
        os.environ["MONGODB_URI"] = info["uri"]
    _settings()  # a bad variable is named here, not in a traceback
    worker_main()


def train(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(
        help="s3://, gs://, https://, synthetic://, a stored dataset id, or a local .zip/folder (uploaded).")] = None,
    reward: Annotated[str | None, typer.Option(help="Built-in reward name, stored reward id, or a .js file (uploaded).")] = None,
    name: Annotated[str | None, typer.Option(help="The name an uploaded --dataset keeps (default: its file name).")] = None,
    preset: Annotated[str | None, typer.Option(help="Curriculum preset.")] = None,
    config: Annotated[Path | None, typer.Option(help="dreamforge.config.json")] = None,
    epochs: Annotated[str | None, typer.Option(help="Epochs of stage 1, 2 and RL: --epochs 5 3 2.")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Show progress and logs until it ends.")] = False,
    local: Annotated[bool, typer.Option(help="Train in this process instead of through the service.")] = False,
    output: Annotated[Path, typer.Option(help="With --local: output folder; rerun to resume.")] = Path("models/job"),
) -> None:
    """Submit a training job to DreamForge (or, with --local, train right here)."""
    try:
        epoch_list = parse_epochs(epochs, ctx.args)
    except ValueError as e:
        raise fail(str(e), 2) from None
    if local:
        from pipeline.run import main as run_main

        argv = ["--output", str(output)]
        for flag, value in (("--dataset", dataset), ("--reward", reward), ("--preset", preset), ("--config", config)):
            if value:
                argv += [flag, str(value)]
        if epoch_list:
            argv += ["--epochs", *epoch_list]
        raise typer.Exit(run_main(argv))
    body: dict[str, Any] = {"source": {"kind": "cli"}}
    if config:
        try:
            body["config"] = json.loads(config.read_text())
        except (OSError, ValueError) as e:
            raise fail(f"{config}: {e}", 2) from None
    if preset:
        body["preset"] = preset
    if epoch_list:
        body["epochs"] = [float(x) for x in epoch_list]
    with _client() as c:
        try:
            if dataset:
                body["dataset"] = _dataset_ref(c, dataset, (body.get("config") or {}).get("task", "detect"), name)
            if reward:
                body["reward"] = c.store_reward(Path(reward))["id"] if reward.endswith(".js") else reward
            if not (config or preset or dataset):
                body["preset"] = "retail-shelf"
            job_id = c.submit(body)["jobId"]
            typer.echo(f"submitted {job_id}")
            if dash := _dashboard_url(c):
                typer.echo(f"  dashboard: {dashboard_page(dash, 'job', job_id)}")
            if follow:
                job = follow_job(c, job_id)
                print_summary(job)
                raise typer.Exit(0 if job["status"] == "succeeded" else 1)
        except ApiError as e:
            raise fail(str(e), 2 if e.status == 422 else 1) from None


def status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a job: status, stages, progress, metrics."""
    with _client() as c:
        try:
            job = c.status(job_id)
        except ApiError as e:
            raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(job, indent=1))
        return
    typer.echo(f"{job['jobId']}  {job['status']}  {job['progress']:.0f}%  stage={job.get('stage') or '-'}")
    typer.echo(f"  spend: {spend_text(job.get('spend'), job.get('caps'))}")
    if job.get("paused"):
        typer.echo(f"  paused in {job['paused']['stage']}: {job['paused']['reason']}; raise the cap to resume: "
                   f"dreamforge caps {job['jobId']} --wall-minutes N (or --gpu-seconds, --usd)")  # fmt: skip
    for field, ds in (job.get("datasets") or {}).items():
        typer.echo(f"  {field.replace('_', ' ')}: {ds['name']} ({ds['id']})")
    for s, st in job["stages"].items():
        secs = f"{st['seconds']:.1f}s" if st.get("seconds") else ""
        typer.echo(f"  {stage_label(s):<20} {st['status']:<9} attempts={st['attempts']} {secs}")
    print_summary(job)


def logs(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False) -> None:
    """Print a job's log lines (with -f, follow them until the job ends)."""
    with _client() as c:
        try:
            if follow:
                for _, lines in c.follow(job_id):
                    for ln in lines:
                        typer.echo(log_line(ln))
                return
            after = 0
            while lines := (body := c.logs(job_id, after))["lines"]:
                for ln in lines:
                    typer.echo(log_line(ln))
                after = body["next"]
        except ApiError as e:
            raise fail(str(e)) from None


def cancel(job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one within seconds."""
    with _client() as c:
        try:
            job = c.cancel(job_id)
        except ApiError as e:
            raise fail(str(e)) from None
    typer.echo(f"{job_id}: {'cancelled' if job['status'] == 'cancelled' else 'cancelling'}")


def approve(job_id: str) -> None:
    """Let a job awaiting approval (a pull request from a fork) train: it joins the queue."""
    with _client() as c:
        try:
            job = c.approve(job_id)
        except ApiError as e:
            raise fail(str(e)) from None
    typer.echo(f"{job_id}: approved, {job['status']}")


def jobs(
    repo: Annotated[str | None, typer.Option()] = None,
    branch: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="e.g. running or failed,dead")] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    with _client() as c:
        try:
            page = c.jobs(repo=repo, branch=branch, status=status, limit=limit)
        except ApiError as e:
            raise fail(str(e)) from None
    table = Table("job", "status", "progress", "stage", "repo", "branch", "created")
    for j in page["jobs"]:
        src = j.get("source") or {}
        table.add_row(j["jobId"], j["status"], f"{j['progress']:.0f}%", j.get("stage") or "-", src.get("repo") or "-",
                      src.get("branch") or "-", j["created_at"][:19])  # fmt: skip
    Console().print(table)


def demo(
    home: Annotated[Path | None, typer.Option(help="Data directory (default ./.dreamforge).")] = None,
    preset: Annotated[str, typer.Option()] = "retail-shelf",
) -> None:
    """The demo through the real stack: start it, submit the retail-shelf job over the API,
    follow it to the end, print the metrics and where the model is, stop the stack."""
    home = home or _settings().home
    stack = _start(home, workers=1, dashboard=False)
    typer.echo(f"local stack up: API {stack.api_url}, database {stack.uri}")
    try:
        with Client(stack.api_url, stack.dev_key) as c:
            job_id = c.submit({"preset": preset, "source": {"kind": "cli"}})["jobId"]
            typer.echo(f"submitted {job_id} (preset {preset})")
            job = follow_job(c, job_id)
            print_summary(job)
    finally:
        stack.stop()
        (home / STACK_FILE).unlink(missing_ok=True)
    raise typer.Exit(0 if job["status"] == "succeeded" else 1)



def _start(home: Path, workers: int, dashboard: bool):
    try:
        entry = Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py"
        stack = start_stack(home, workers=workers, dashboard=dashboard and entry.exists())
    except RuntimeError as e:
        raise fail(str(e)) from None
    (home / STACK_FILE).write_text(json.dumps({"url": stack.api_url, "key": stack.dev_key, "uri": stack.uri,
                                               "dashboard": stack.dashboard_url, "pid": os.getpid()}))  # fmt: skip
    (home / STACK_FILE).chmod(0o600)
    return stack


def _dashboard_url(c: Client) -> str | None:
    """The dashboard of the API this client talks to: $DREAMFORGE_DASHBOARD_URL, or the local
    stack's own when the client talks to that stack."""
    info = stack_info() or {}
    own = info.get("dashboard") if info.get("url") == c.url else None
    return os.environ.get("DREAMFORGE_DASHBOARD_URL") or own


def _dataset_ref(c: Client, dataset: str, task: str, name: str | None = None) -> str:
    """A local file or folder is uploaded (the API may run elsewhere) under ``name`` (default: its
    file name), which the job shows; anything else passes through."""
    path = Path(dataset)
    if "://" in dataset or dataset.startswith("ds_") or not path.exists():
        if name:
            raise fail("--name names a dataset uploaded from a local .zip or folder; --dataset is not one", 2)
        return dataset
    up = c.upload_dataset(path, name=name, task=task)
    typer.echo(f"uploaded {path.name} as dataset {up['name']} ({up['id']}): {up['images']} images")
    return up["id"]


def caps(
    job_id: Annotated[str | None, typer.Argument(help="A job; without one, the project's caps (all its jobs' spend together).")] = None,
    gpu_seconds: Annotated[float | None, typer.Option(help="Cap in GPU-seconds.")] = None,
    usd: Annotated[float | None, typer.Option(help="Cap in dollars.")] = None,
    wall_minutes: Annotated[float | None, typer.Option(help="Cap in minutes of running stages.")] = None,
) -> None:
    """Show spend against the caps, or set them (the options given replace all three); a paused job
    that no cap holds any more resumes where it stopped."""
    body = {k: v for k, v in {"gpu_seconds": gpu_seconds, "usd": usd, "wall_minutes": wall_minutes}.items() if v is not None}
    setting = bool(body)
    with _client() as c:
        try:
            if job_id:
                view = c.request("PUT", f"/api/jobs/{job_id}/caps", json=body) if setting else c.status(job_id)
            else:
                view = c.request("PUT" if setting else "GET", "/api/caps", **({"json": body} if setting else {}))
        except ApiError as e:
            raise fail(str(e)) from None
    typer.echo(f"{job_id or 'project'}: {spend_text(view.get('spend'), view.get('caps'))}"
               + (f"  [{view['status']}]" if job_id else ""))  # fmt: skip
    if job_id and view.get("paused"):
        typer.echo(f"  paused: {view['paused']['reason']}")
    if view.get("resumed"):
        typer.echo(f"  resumed: {', '.join(view['resumed'])}")
