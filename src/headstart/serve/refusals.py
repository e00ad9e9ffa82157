"""The refusals every upload endpoint can answer, for ``responses=`` (the OpenAPI page lists them)."""

from __future__ import annotations

_ERROR = {"content": {"application/json": {"example": {"error": "what happened and how to fix it"}}}}


def refusals(*codes: int) -> dict[int, dict]:
    """``responses=`` for ``codes``, each a JSON body {"error": "..."}."""
    what = {400: "the body is not multipart/form-data", 401: "a token is needed (--token) and missing or wrong",
            404: "no such model id", 408: "the request or the work did not finish in time (--timeout)",
            409: "no model is loaded yet", 413: "too large: the body, an image's pixels, or too many images",
            415: "not an image", 422: "the request or an image cannot be used"}
    return {c: {"description": what[c], **_ERROR} for c in codes}
