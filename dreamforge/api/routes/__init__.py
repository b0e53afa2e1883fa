"""One router per resource; ``dreamforge.api.app`` includes them all."""
