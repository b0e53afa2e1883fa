"""``dreamforge gate``: show or set the project's preview gate (``pipeline.gate.GateConfig``)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from dreamforge.cli.client import ApiError, Client
from dreamforge.cli.console import fail
from dreamforge.settings import SettingsError
from pipeline.gate import GateConfig

_F = GateConfig.model_fields  # each option's help is the schema's own description


def gate(
    metric: Annotated[str | None, typer.Option(help=_F["metric"].description)] = None,
    margin: Annotated[float | None, typer.Option(help=_F["margin"].description)] = None,
    tolerance: Annotated[float | None, typer.Option(help=_F["tolerance"].description)] = None,
    branch: Annotated[str | None, typer.Option(help=_F["branch"].description)] = None,
    enabled: Annotated[bool | None, typer.Option("--on/--off", help=_F["enabled"].description)] = None,
    reset: Annotated[bool, typer.Option(help="Forget the project's gate (jobs read the default branch's config).")] = False,
) -> None:
    """Show the project's preview gate, or change the fields given (the others keep their values)."""
    changes = {k: v for k, v in {"metric": metric, "margin": margin, "tolerance": tolerance, "branch": branch,
                                 "enabled": enabled}.items() if v is not None}  # fmt: skip
    try:
        with Client() as c:
            if reset:
                view = c.request("DELETE", "/api/gate")
            elif changes:
                current = {k: v for k, v in c.request("GET", "/api/gate").items() if k in _F}
                try:
                    body = GateConfig.model_validate({**current, **changes}).model_dump()
                except ValidationError as e:
                    raise fail("; ".join(f"--{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None
                view = c.request("PUT", "/api/gate", json=body)
            else:
                view = c.request("GET", "/api/gate")
    except (ApiError, SettingsError) as e:
        raise fail(str(e)) from None
    rule = f"within {view['tolerance']:g} of" if view.get("tolerance") is not None else f"{view['margin']:+g} or better than"
    typer.echo(f"gate: {'on' if view['enabled'] else 'off'} ({'set by the project' if view['project_set'] else 'defaults'}): "
               f"a branch passes when its {view.get('metric') or 'primary metric'} is {rule} "
               f"{view.get('branch') or 'the default branch'}'s released model")  # fmt: skip
