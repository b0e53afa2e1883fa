"""``dreamforge serve``: a trained model behind Moondream Station's REST API (``dreamforge.serve``)."""

from __future__ import annotations

from typing import Annotated

import typer

from dreamforge.cli.console import fail

MODEL_HELP = "A job id (its released model in the local artifacts folder), a job's output folder, or an exported model folder."


def serve(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (Moondream Station's is 2020).")] = 2020,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 to accept other machines.")] = "127.0.0.1",
    api_key: Annotated[
        str | None, typer.Option(envvar="DREAMFORGE_SERVE_API_KEY", help="Require this key in the X-Moondream-Auth header.")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="For a job: release (the one its evaluation chose), full or 4bit.")] = "release",
    batch_window_ms: Annotated[float, typer.Option(min=0, help="How long a request waits for others to share its forward pass.")] = 10.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images in one batch (1: no batching).")] = 8,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body accepted.")] = 20.0,
) -> None:
    """Serve a trained model over Moondream Station's API: /v1/detect, /v1/point, /v1/caption, …"""
    from dreamforge.serve.model import resolve
    from dreamforge.settings import Settings, SettingsError

    try:
        model_dir = resolve(model, Settings().artifacts, format)
    except (FileNotFoundError, ValueError, SettingsError) as e:
        raise fail(str(e), 2 if isinstance(e, SettingsError) else 1) from None
    import uvicorn

    from dreamforge.serve.app import create_app
    from dreamforge.serve.model import ServedModel

    typer.echo(f"loading {model_dir} …", err=True)
    served = ServedModel(model_dir, window_s=batch_window_ms / 1000, max_batch=max_batch)
    app = create_app(served, api_key=api_key, max_body=int(max_body_mb * 1024 * 1024))
    typer.echo(f"serving {served.codec.task} model {model_dir} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
