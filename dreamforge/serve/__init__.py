"""``dreamforge serve``: a trained model behind Moondream Station's REST API.

Code written for Moondream Station (its Python client, curl against ``localhost:2020/v1``) works
unchanged against a DreamForge model. The routes and shapes follow Station's
``moondream_station/core/rest_server.py`` (m87-labs/moondream-station, commit cdec524):
``GET /health`` → ``{"status": "ok", "server": …}``, ``GET /v1/models`` → ``{"models": [{id,
name, description, version}]}``, and ``POST /v1/<skill>`` with a JSON body whose ``image_url``
is a data URL, as Moondream's client sends it (``X-Moondream-Auth`` carries the API key).

``inputs`` reads a request's image, ``answers`` turns the model's decoded target into Station's
answer shapes, ``model`` finds and loads the model and batches concurrent requests, ``app`` is
the FastAPI app.
"""
