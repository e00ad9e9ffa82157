"""``headstart serve``: an HTTP API and a web page over a model folder (no model logic here).

- ``app.py``: the FastAPI app (routes, limits, token, JSON errors) over ``ImageClassifier``;
- ``batching.py``: concurrent requests joined into one batch for the model's worker thread;
- ``uploads.py``: uploaded bytes -> decoded images, refusing what is not a usable image;
- ``teach.py``: the teach view's training jobs (one at a time) in a server-side work folder;
- ``cli.py``: the ``serve`` command; ``static/``: the page (plain HTML, JS and CSS).

FastAPI is imported by ``app.py`` only, so ``headstart --help`` stays instant.
"""
