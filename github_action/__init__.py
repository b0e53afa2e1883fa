"""The GitHub Action that posts ``dreamforge.config.json`` on every push; arrives with its own issue."""
