"""``python -m dreamforge.cli`` = the ``dreamforge`` console script (for environments without it on PATH)."""

from dreamforge.cli.app import app

if __name__ == "__main__":
    app()
