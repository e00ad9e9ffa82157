"""``POST /v1/explain``: one uploaded image with the heat map (Grad-CAM) of the model's prediction
and of any class asked for, as a PNG (``estimator.explain``); the page shows it on request."""

from __future__ import annotations

import io
import json
import threading

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .contract import explain_body, read_form, responses
from .uploads import Rejection, decode_upload

_PNG = {200: {"description": "the picture: the image as the model sees it, then one heat map per target "
                             "(header X-Headstart-Explain: the targets, scores and peaks as JSON)",
              "content": {"image/png": {}}}}


def explain_router(models, settings) -> APIRouter:
    router = APIRouter(tags=["explain"])
    lock = threading.Lock()  # gradients in PyTorch: one heat map at a time, the cores stay with predictions

    def explain_one(clf, data: bytes, name: str | None, classes: list[str]) -> tuple[bytes, dict]:
        from ..estimator.explain import explain
        from ..lab.gradcam import render

        mode = "RGB" if clf.backbone_.preprocess.channels == 3 else "L"
        image = decode_upload(data, name, 0, max_pixels=settings.max_pixels, mode=mode)
        with lock:
            (row,) = explain(clf, [image], classes=classes)
        buf = io.BytesIO()
        render(row.picture, row.maps, title=name or "").save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), row.to_dict()

    @router.post("/v1/explain", summary="A heat map of where in the image the prediction comes from",
                 response_class=Response, openapi_extra=explain_body(),
                 responses={**_PNG, **responses(403, 404, 409, 415, 422, token=bool(settings.token))})
    async def explain_image(request: Request,
                            target: list[str] = Query([], alias="class",
                                                      description="also explain this class (repeatable)"),
                            model: str | None = Query(None, description="model id (default: the served model)")
                            ) -> Response:
        m = models.get(model)
        known = list(getattr(m.clf.task_, "labels", []) or [])
        unknown = [t for t in target if known and t not in known]
        if unknown:  # a class the model does not have is a target not found, like an unknown model id
            raise Rejection(404, f"this model has no class {unknown[0]!r}; its classes are {known[:20]}.")
        files, _ = await read_form(request, files={"image": 1}, fields={})
        if not files["image"]:
            raise Rejection(422, "no image in the request: send one multipart file part named 'image' "
                                 "(e.g. curl -F image=@photo.jpg).")
        (name, data), = files["image"]
        png, info = await run_in_threadpool(explain_one, m.clf, data, name, target)
        info.pop("png", None)
        return Response(png, media_type="image/png", headers={"X-Headstart-Explain": json.dumps(info["maps"])})

    return router
