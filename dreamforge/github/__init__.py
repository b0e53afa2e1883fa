"""GitHub: ``webhooks`` turns a push into a preview job, ``push_outbox`` retries GitHub reads,
``status`` writes commit statuses and PR comments back, ``oidc`` verifies Actions tokens.
The HTTP routes are in ``dreamforge.api.routes.github``."""
