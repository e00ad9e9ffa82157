"""``POST /v1/explain``: one uploaded image with the heat map (Grad-CAM) of the model's prediction
and of any class asked for, as a PNG (``estimator.explain``); the page shows it on request."""

from __future__ import annotations

import io
import json
import threading

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .refusals import refusals
from .uploads import decode_upload

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
                 response_class=Response, responses={**_PNG, **refusals(400, 401, 404, 408, 409, 413, 415, 422)})
    async def explain_image(image: UploadFile = File(..., description="one image file"),
                            target: list[str] = Query([], alias="class",
                                                      description="also explain this class (repeatable)"),
                            model: str | None = Query(None, description="model id (default: the served model)")
                            ) -> Response:
        m = models.get(model)
        png, info = await run_in_threadpool(explain_one, m.clf, await image.read(), image.filename, target)
        info.pop("png", None)
        return Response(png, media_type="image/png", headers={"X-Headstart-Explain": json.dumps(info["maps"])})

    return router
