"""Modal deployment glue (thin wrappers over ``dreamforge`` and ``pipeline``); arrives with its own issue."""
