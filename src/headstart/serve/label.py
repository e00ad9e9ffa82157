"""``POST /v1/label``: the embedded backbone's own ImageNet top-k for uploaded images (what the
backbone knows before any retraining; ``backbones.imagenet``). The backbone loads on the first
request and stays loaded."""

from __future__ import annotations

import threading

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from .contract import predict_body, read_form, responses
from .uploads import Rejection, decode_upload


def label_router(settings) -> APIRouter:
    router = APIRouter(tags=["label"])
    loaded: dict = {}
    lock = threading.Lock()

    def backbone():
        with lock:  # one load, however many first requests arrive together
            if "bb" not in loaded:
                from ..backbones.imagenet import imagenet_backbone

                loaded["bb"] = imagenet_backbone()
            return loaded["bb"]

    def label(datas: list[bytes], names: list[str | None], top_k: int) -> list[dict]:
        from ..backbones.imagenet import imagenet_probabilities, top_classes

        bb = backbone()
        x = np.stack([decode_upload(d, n, i, max_pixels=settings.max_pixels, preprocess=bb.preprocess)
                      for i, (d, n) in enumerate(zip(datas, names))])
        with lock:  # the backbone's PyTorch threads serve one request at a time
            tops = top_classes(imagenet_probabilities(bb, x), top_k)
        return [{"file": n or f"image {i + 1}", "label": t[0]["label"], "probability": t[0]["probability"],
                 "top": t} for i, (n, t) in enumerate(zip(names, tops))]

    @router.post("/v1/label", summary="The backbone's own ImageNet classes for images (multipart file parts 'images')",
                 openapi_extra=predict_body(settings.max_images),
                 responses=responses(403, 415, 422, token=bool(settings.token)))
    async def label_images(request: Request,
                           top_k: int = Query(5, ge=1, le=1000, description="how many classes per image")) -> dict:
        files, _ = await read_form(request, files={"images": settings.max_images}, fields={})
        uploads = files["images"]
        if not uploads:
            raise Rejection(422, "no images in the request: send one or more multipart file parts named 'images' "
                                 "(e.g. curl -F images=@photo.jpg).")
        rows = await run_in_threadpool(label, [d for _, d in uploads], [n for n, _ in uploads], top_k)
        return {"backbone": backbone().name, "classes": "ImageNet-1k", "predictions": rows}

    return router
