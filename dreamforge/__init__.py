"""DreamForge."""
