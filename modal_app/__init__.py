"""Modal deployment glue (thin wrappers over ``dreamforge`` and ``pipeline``): ``modal deploy modal_app/app.py``."""
