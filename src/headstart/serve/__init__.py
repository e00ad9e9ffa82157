"""``headstart serve``: an HTTP API and a web page over a model folder (no model logic here).

- ``app.py``: the FastAPI app (routes, limits, JSON errors) over ``ImageClassifier``;
- ``contract.py``: what each endpoint answers and takes (the OpenAPI document) and the one multipart reader;
- ``guard.py``: Host / Origin checks, the token and body-size middleware, the memory budget;
- ``server.py``: uvicorn with request-head timeouts and a connection limit;
- ``batching.py``: concurrent requests joined into one batch for the model's worker thread;
- ``uploads.py``: uploaded bytes -> decoded images, refusing what is not a usable image;
- ``teach.py``: the teach view's training jobs (one at a time) in a server-side work folder;
- ``cli.py``: the ``serve`` command; ``static/``: the page (plain HTML, JS and CSS).

FastAPI is imported by the serve modules only (never by ``cli/``), so ``headstart --help`` stays instant.
"""
