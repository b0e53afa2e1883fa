"""``python -m dreamforge.cli_entry`` = the ``dreamforge`` console script (for environments without it on PATH)."""

from dreamforge.cli import app

if __name__ == "__main__":
    app()
