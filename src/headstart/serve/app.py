"""The HTTP API and the page: a thin FastAPI layer over ``ImageClassifier``.

``POST /v1/predict`` (multipart ``images``), ``GET /v1/model``, ``GET /healthz``, ``/docs``,
the teach endpoints (``teach.py``) and the page at ``/``. Every refusal is a 4xx JSON body
``{"error": "..."}``; a refused request never stops the server. Clients name models by id,
never by a server-side path.

>>> app = create_app(ServeSettings(model_dir="model/"))   # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import HeadstartError
from ..threads import one_torch_thread
from .batching import Batcher
from .contract import declare_token, predict_body, read_form, responses
from .guard import (
    Budget,
    Busy,
    ClientShare,
    OriginGuard,
    SizeTokenGuard,
    allowed_hosts,
    client_of,
    release_memory,
)
from .predictor import Predictor, default_workers
from .uploads import Rejection, decode_upload, describe, image_size

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``headstart serve`` is told; the defaults are the command's defaults."""

    model_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_mb: float = 64.0       # whole request body
    max_images: int = 32              # per prediction request
    max_pixels: int = 40_000_000      # per image, from its header (decompression bombs)
    batch_wait_ms: float = 5.0        # how long a worker waits to fill a batch
    max_batch: int = 32               # images per model call
    workers: int = field(default_factory=default_workers)  # model calls at once (batches in flight)
    timeout_s: float = 30.0           # receiving the body + waiting for the prediction
    max_teach_images: int = 2000
    max_request_pixels: int = 100_000_000  # all images of one request, from their headers
    max_pending_mb: float = 512.0     # decoding + model inputs of all requests in flight, else 503
    max_queued_images: int = 256      # images waiting for the model, else 503
    allowed_hosts: tuple[str, ...] = ()    # Host names accepted besides the bound one ("*": any)
    idle_timeout_s: float = 15.0      # a connection's request headers must arrive within this
    max_connections: int = 256        # open connections; an idle one is closed to make room
    work_dir: str | None = None       # teach jobs; a fresh temporary folder when None
    engine: str = "auto"

    def check(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise HeadstartError(
                f"binding to {self.host!r} makes the server reachable from other machines, so it needs a "
                "token: pass --token SECRET (or set HEADSTART_TOKEN); clients then send "
                "'Authorization: Bearer SECRET'. Or bind to 127.0.0.1.")
        for name in ("max_upload_mb", "max_images", "max_pixels", "max_batch", "timeout_s", "workers",
                     "max_teach_images", "max_request_pixels", "max_pending_mb", "max_queued_images", "idle_timeout_s",
                     "max_connections"):
            if getattr(self, name) <= 0:
                raise HeadstartError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)!r}.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServedModel:
    """A loaded model with its own batching workers."""

    id: str
    clf: Any                   # ImageClassifier
    source: str                # "folder" or "taught"
    name: str                  # folder name or teach job id: never a path
    predictor: Predictor = field(init=False)
    batcher: Batcher = field(init=False)

    def start(self, settings: ServeSettings) -> "ServedModel":
        # The cores are shared out between the workers: with 2 cores, 2 workers of 1 thread each.
        threads = max(1, (os.cpu_count() or 1) // settings.workers)
        self.predictor = Predictor(self.clf, threads=threads)
        self.batcher = Batcher(self.predictor.predict, wait_ms=settings.batch_wait_ms,
                               max_batch=settings.max_batch, workers=settings.workers, name=self.id)
        return self

    def info(self) -> dict:
        c = self.clf
        drop = ("worst", "skipped")
        metrics = {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if isinstance(v, dict) else v)
                   for k, v in getattr(c, "metrics_", {}).items()}
        out = {"id": self.id, "source": self.source, "name": self.name, "task": c.task_.name,
               "labels": list(c.classes_), "backbone": c.backbone_.name,
               "input_size": c.backbone_.preprocess.input_size, "metrics": metrics,
               "created": (getattr(c, "config_", None) or {}).get("created")}  # when it was trained (the page says)
        if hasattr(c.task_, "threshold_reason"):  # binary: the decision threshold, shown wherever a label is
            out.update(threshold=c.task_.threshold, threshold_reason=c.task_.threshold_reason)
        return out


class Models:
    """The served models by id: the folder given on the command line and the latest taught one."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._by_id: dict[str, ServedModel] = {}
        self.default_id: str | None = None

    def add(self, model: ServedModel, *, replace_source: str | None = None) -> None:
        model.start(self.settings)
        with self._lock:
            old = [m for m in self._by_id.values() if replace_source and m.source == replace_source]
            for m in old:
                del self._by_id[m.id]
            self._by_id[model.id] = model
            if self.default_id is None or self.default_id not in self._by_id:
                self.default_id = model.id
        for m in old:
            m.batcher.close()

    def get(self, model_id: str | None) -> ServedModel:
        with self._lock:
            key = model_id or self.default_id
            if key is None:
                raise Rejection(409, "no model is loaded yet: teach one on the page (Teach tab) or with "
                                     "POST /v1/teach/jobs, or start the server with a model folder: headstart serve MODEL_DIR.")
            if key not in self._by_id:
                raise Rejection(404, f"no model {key!r} here; available: {sorted(self._by_id)}.")
            return self._by_id[key]

    def all(self) -> list[ServedModel]:
        with self._lock:
            return list(self._by_id.values())

    def close(self) -> None:
        for m in self.all():
            m.batcher.close()


def create_app(settings: ServeSettings, clf: Any = None) -> FastAPI:
    """The app for ``settings``; loads ``settings.model_dir`` unless ``clf`` is given."""
    from ..estimator import load
    from .explain import explain_router
    from .label import label_router
    from .teach import TeachJobs, teach_router
    from .text import is_text_folder, text_router

    settings.check()
    models = Models(settings)
    if clf is None and settings.model_dir and not is_text_folder(settings.model_dir):
        clf = load(settings.model_dir, engine=settings.engine)
    if clf is not None:
        name = Path(settings.model_dir).name if settings.model_dir else "model"
        models.add(ServedModel("served", clf, "folder", name))
    jobs = TeachJobs(settings, on_model=lambda job, c: models.add(
        ServedModel(f"taught-{job.id}", c, "taught", job.id), replace_source="taught"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        models.close()
        jobs.close()

    # /docs and /redoc from the installed package, not a CDN
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(redoc_url=None, title="headstart", version=_version(), lifespan=lifespan,
                  description="Predict images with a headstart model, or teach a new one. "
                              "Every refusal is a 4xx JSON body {\"error\": \"...\"}.")
    app.state.settings, app.state.models, app.state.jobs = settings, models, jobs
    app.state.budget = Budget(int(settings.max_pending_mb * 2**20))  # uploads, decoding, model inputs
    app.add_middleware(SizeTokenGuard, settings=settings, budget=app.state.budget)
    app.add_middleware(OriginGuard, hosts=allowed_hosts(settings.host, settings.allowed_hosts))  # outermost
    _add_error_handlers(app)
    _redoc_route(app)
    app.include_router(teach_router(jobs))
    app.include_router(label_router(settings))
    app.include_router(explain_router(models, settings))
    app.include_router(text_router(settings))  # texts: serve/text.py
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _info_routes(app, models, jobs, settings)
    _predict_route(app, models, settings)
    if settings.token:
        declare_token(app)
    return app


def _info_routes(app: FastAPI, models: Models, jobs, settings: ServeSettings) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", operation_id="healthz", summary="Liveness: the server answers", responses=responses(token=bool(settings.token)))
    def healthz() -> dict:
        return {"status": "ok", "models": [m.id for m in models.all()], "teach_busy": jobs.busy(),
                "batching": {m.id: asdict(m.batcher.stats) for m in models.all()}}

    @app.get("/v1/model", operation_id="model_info", summary="The model's task, labels, backbone, metrics and the server's limits",
             responses=responses(404, 409, token=bool(settings.token)))
    def model_info(model: str | None = Query(None, description="model id (default: the served model)")) -> dict:
        m = models.get(model)
        return {**m.info(), "default": m.id == models.default_id,
                "models": [x.id for x in models.all()],
                "limits": limits(settings)}


def limits(settings: ServeSettings) -> dict:
    """The limits a client can hit, as ``/v1/model`` and ``/v1/teach`` report them."""
    from .teach import KEEP_JOBS, MAX_CLASSES, MIN_PER_CLASS

    return {"max_upload_mb": settings.max_upload_mb, "max_images": settings.max_images,
            "max_pixels": settings.max_pixels, "max_request_pixels": settings.max_request_pixels,
            "max_pending_mb": settings.max_pending_mb, "max_queued_images": settings.max_queued_images,
            "timeout_s": settings.timeout_s,
            "teach": {"max_images": settings.max_teach_images, "min_per_class": MIN_PER_CLASS,
                      "max_classes": MAX_CLASSES, "jobs_kept": KEEP_JOBS, "shared_feature_cache": False}}


def _predict_route(app: FastAPI, models: Models, settings: ServeSettings) -> None:
    budget = app.state.budget
    share = app.state.share = ClientShare(settings.max_queued_images, settings.max_images)

    @app.post("/v1/predict", operation_id="predict", summary="Predict one or several images (multipart file parts 'images')",
              openapi_extra=predict_body(settings.max_images),
              responses=responses(403, 404, 409, 415, 422, 503, token=bool(settings.token)))
    async def predict(request: Request,
                      top_k: int = Query(3, ge=1, le=100, description="how many labels per image"),
                      model: str | None = Query(None, description="model id (default: the served model)")
                      ) -> JSONResponse:
        t0 = time.perf_counter()
        m = models.get(model)
        files, _ = await read_form(request, files={"images": settings.max_images}, fields={})
        uploads = files["images"]
        if not uploads:
            raise Rejection(422, "no images in the request: send one or more multipart file parts named 'images' "
                                 "(e.g. curl -F images=@photo.jpg).")
        client, n = client_of(request.scope), len(uploads)
        share.take(client, n)  # before any work: a flooding client is refused here
        try:
            rows, names = await _predict_admitted(m, uploads, top_k, client, budget, settings,
                                                  request.scope["headstart.t0"] + settings.timeout_s)
        finally:
            share.give(client, n)
        preds = [{"file": names[i] or describe(i, None), **r} for i, r in enumerate(rows)]
        # A plain JSONResponse: the rows are JSON already, FastAPI's encoder would only walk them again.
        return JSONResponse({"model": m.id, "predictions": preds, "seconds": round(time.perf_counter() - t0, 4)})


async def _predict_admitted(m: ServedModel, uploads: list, top_k: int, client: str, budget: Budget,
                            settings: ServeSettings, deadline: float) -> tuple[list, list]:
    """Headers checked, memory taken from the budget, decoded, batched; (rows, file names)."""
    pred = m.predictor
    cost = await run_in_threadpool(_admit, uploads, settings, pred.preprocess)
    budget.take(cost)
    try:
        inputs = await _before(deadline, settings, run_in_threadpool(_prepare_all, uploads, pred, settings, deadline))
        names = [n for n, _ in uploads]
        uploads.clear()  # the raw bytes are no longer needed while the batch waits
        fut = m.batcher.submit(inputs, top_k, client)
        del inputs
        try:
            return await _before(deadline, settings, asyncio.wrap_future(fut)), names
        finally:
            fut.cancel()  # a late request is dropped before the model runs it
    finally:
        if budget.give(cost):  # nothing else in flight: give freed memory back to the system
            asyncio.get_running_loop().run_in_executor(None, release_memory)


def _admit(uploads: list, settings: ServeSettings, preprocess) -> int:
    """Every header checked, the request's pixels within its limit; its memory estimate in bytes
    (Pillow holds a decoded RGB pixel in 4 bytes; the model input is float32)."""
    sizes = [image_size(d, n, i, max_pixels=settings.max_pixels) for i, (n, d) in enumerate(uploads)]
    pixels = sum(w * h for w, h in sizes)
    if pixels > settings.max_request_pixels:
        raise Rejection(413, f"the {len(sizes)} images of this request have {pixels:,} pixels in all; this server "
                             f"decodes at most {settings.max_request_pixels:,} per request (--max-request-pixels): "
                             "send fewer or smaller images per request.")
    model_input = 4 * preprocess.channels * preprocess.input_size ** 2
    return 4 * pixels + len(sizes) * model_input


def _prepare_all(uploads: list, pred: Predictor, settings: ServeSettings, deadline: float) -> list:
    """Decoded and preprocessed, off the event loop; stops at the deadline (between images,
    each one bounded by --max-pixels). Each request's thread resamples on its own thread: the
    batch workers have the cores (``threads.one_torch_thread``)."""
    one_torch_thread()
    out = []
    for i, (name, data) in enumerate(uploads):
        if time.perf_counter() > deadline:
            raise _late(settings)
        out.append(decode_upload(data, name, i, max_pixels=settings.max_pixels, preprocess=pred.preprocess))
    return out


async def _before(deadline: float, settings: ServeSettings, awaitable):
    try:
        return await asyncio.wait_for(awaitable, timeout=max(0.01, deadline - time.perf_counter()))
    except asyncio.TimeoutError:
        raise _late(settings) from None


def _late(settings: ServeSettings) -> Rejection:
    return Rejection(408, f"the prediction did not finish within {settings.timeout_s:g} s (the server is "
                          "busy); try again, or send fewer images per request.")


# ---- JSON errors ------------------------------------------------------------------------

def _redoc_route(app: FastAPI) -> None:
    """/redoc from the installed package, with a policy that keeps the browser on this server
    (ReDoc's sidebar logo is an image on its CDN)."""
    from fastapi.openapi.docs import get_redoc_html
    from fastapi.responses import HTMLResponse

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(openapi_url="/openapi.json", title="headstart - ReDoc", with_google_fonts=False,
                              redoc_js_url="/static-offline-docs/redoc.standalone.js",
                              redoc_favicon_url="/static-offline-docs/favicon.png")
        html = page.body.decode().replace("<head>", "<head>\n<meta http-equiv=\"Content-Security-Policy\" "
                                          "content=\"default-src 'self' 'unsafe-inline' blob: data:\">", 1)
        return HTMLResponse(html)


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def recorded_error(r: Rejection) -> JSONResponse:
        return error(r.status, r.message, {"connection": "close",
                                           **({"retry-after": str(r.retry_after)} if isinstance(r, Busy) else {})})

    @app.exception_handler(Rejection)
    async def _rejection(request: Request, e: Rejection):
        # A refused upload may not have been read to its end: close, so the rest is not taken for a request.
        headers = {"connection": "close"} if request.method not in ("GET", "HEAD") else {}
        if isinstance(e, Busy):
            headers["retry-after"] = str(e.retry_after)
        return error(e.status, e.message, headers)

    @app.exception_handler(HeadstartError)
    async def _headstart(request: Request, e: HeadstartError):
        return error(422, str(e))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        recorded = request.scope.get("headstart.rejection")
        if recorded is not None:
            return recorded_error(recorded)
        if e.status_code == 404:
            return error(404, f"nothing at {request.method} {request.url.path}; see /docs for the API.")
        if e.status_code == 405:
            return error(405, f"{request.url.path} does not take {request.method}; see /docs for the API.",
                         getattr(e, "headers", None))  # Allow: the methods it takes
        if e.status_code == 400 and request.method == "POST":
            return error(400, f"the body could not be read as multipart/form-data ({e.detail}): send the images "
                              "as multipart file parts named 'images' (e.g. curl -F images=@photo.jpg).")
        return error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        recorded = request.scope.get("headstart.rejection")
        if recorded is not None:
            return recorded_error(recorded)
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            got = f" (got {str(err['input'])[:100]!r})" if err.get("type") != "missing" and "input" in err and \
                not isinstance(err["input"], (bytes, dict, list)) else ""
            parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
        hint = ""
        if any(err.get("loc", (None, None))[-1] == "images" for err in e.errors()):
            hint = " Send the images as multipart file parts named 'images' (e.g. curl -F images=@photo.jpg)."
        return error(422, "the request is not what this endpoint takes: " + "; ".join(parts) + "." + hint)


def _version() -> str:
    from .._version import __version__

    return __version__
