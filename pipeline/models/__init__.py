"""Model building and loading."""
