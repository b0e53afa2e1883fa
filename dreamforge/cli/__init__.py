"""The ``dreamforge`` command line: ``app`` (the Typer app: every command, registered in help
order), ``offline`` (commands that need no service), ``service`` (commands that talk to the API
or start the local stack), ``console`` (what they print), ``client`` (the HTTP client).

``app`` is exported here: the console script is ``dreamforge.cli:app``.
"""

from dreamforge.cli.app import app

__all__ = ["app"]
