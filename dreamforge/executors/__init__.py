"""How a worker runs one stage: ``local`` (a subprocess, forked from ``forkserver`` when it can)
or on Modal (``modal_executor`` submits, ``modal_stage`` runs inside the GPU container,
``modal_calls`` records the call so a restarted worker finds it again)."""
