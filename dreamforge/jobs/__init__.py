"""Jobs in MongoDB: ``queue`` (every state change: claim, cancel, approve, supersede, requeue),
``submit`` (validate a request once and enqueue it), ``sink``, ``streams`` (a running stage's logs and
metrics), ``lanes`` (bounded thread pools for blocking work per project)."""
