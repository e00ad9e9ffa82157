"""The text endpoints: ``POST /v1/text/predict`` (JSON texts in, predictions out) and
``GET /v1/text/model``. They answer when the served folder holds a text model; the page shows
a text box then (``static/text.js``). No model logic here: they call ``TextClassifier``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from .contract import responses
from .uploads import Rejection

MAX_TEXTS = 256
MAX_CHARS = 10_000

class TextRequest(BaseModel):
    texts: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHARS, pattern=r"\S")]] = Field(
        ..., min_length=1, max_length=MAX_TEXTS, description=f"1 to {MAX_TEXTS} texts to classify, each with at least "
        f"one word and at most {MAX_CHARS} characters", examples=[["Who wrote Hamlet ?"]])
    top_k: int = Field(3, ge=1, le=20, description="labels shown per text")


def is_text_folder(model_dir: str | None) -> bool:
    if not model_dir:
        return False
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("kind") == "text"


def text_router(settings) -> APIRouter:
    """The routes for ``settings.model_dir``; a folder that is no text model gets 409 answers."""
    router = APIRouter(prefix="/v1/text", tags=["text"])
    clf = None
    if is_text_folder(settings.model_dir):
        from ..estimator.text import load_text

        clf = load_text(settings.model_dir)
    lock = threading.Lock()  # one network, one request at a time (texts are fast)

    def served():
        if clf is None:
            raise Rejection(409, "the served model is not a text model: start the server with a model trained "
                                 "on texts (headstart train texts.csv --out MODEL_DIR; headstart serve MODEL_DIR).")
        return clf

    @router.get("/model", summary="The text model's task, labels, network and metrics",
                responses=responses(409, token=bool(settings.token)))
    def model_info() -> dict:
        c = served()
        metrics = {k: {kk: vv for kk, vv in v.items() if kk not in ("worst", "values")}
                   for k, v in c.metrics_.items() if isinstance(v, dict)}
        return {"kind": "text", "task": c.task_.name, "labels": list(c.task_.labels),
                "network": c.network_.config.to_dict(), "vocabulary": len(c.vocabulary_), "metrics": metrics,
                "limits": {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS}}

    @router.post("/predict", summary="Classify texts", responses=responses(403, 409, 422, token=bool(settings.token)))
    async def predict(body: TextRequest) -> dict:  # counts, lengths and blank texts: refused by TextRequest (422)
        c = served()
        def run() -> list[dict]:
            with lock:
                return c.predict_rows(body.texts, top_k=body.top_k)

        return {"task": c.task_.name, "predictions": await asyncio.to_thread(run)}

    return router
