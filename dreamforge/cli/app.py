"""The ``dreamforge`` command line: one Typer app, its commands registered here in help order.

Each command is a module-level function (``offline``: no service needed; ``service``: talks
to the API or starts the local stack). A user's mistake ends with a clear message and exit
code 1 (2 for bad config or data), never a traceback.
"""

from __future__ import annotations

import sys

import typer

from dreamforge.cli import gate, offline, preflight, pull, serve, service

app = typer.Typer(help="DreamForge: fine-tune a vision-language model on your own images.", no_args_is_help=True)
for command in (offline.schema, offline.presets, offline.predict):
    app.command()(command)

reward_app = typer.Typer(help="Check rewards before training with them.", no_args_is_help=True)
reward_app.command("test")(offline.reward_test)
app.add_typer(reward_app, name="reward")
app.command()(preflight.preflight)
app.command()(gate.gate)
data_app = typer.Typer(help="Look at a dataset as a model would be trained on it.", no_args_is_help=True)
data_app.command("show")(offline.data_show)
app.add_typer(data_app, name="data")

app.command()(service.up)
app.command()(service.worker)
app.command(context_settings={"allow_extra_args": True})(service.train)
for command in (service.status, service.logs, service.cancel, service.approve, service.caps, service.jobs, offline.init,
                service.demo):
    app.command()(command)
app.command()(serve.serve)
app.command()(pull.pull)


def main() -> None:  # pragma: no cover
    sys.exit(app())
