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
import hmac
import ipaddress
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..errors import HeadstartError
from .batching import Batcher
from .predictor import Predictor, default_workers
from .uploads import Rejection, decode_upload, describe

STATIC = Path(__file__).parent / "static"
PUBLIC_PATHS = ("/", "/favicon.ico")  # the page shell holds no data; it asks for the token
PUBLIC_PREFIXES = ("/static/",)


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
    work_dir: str | None = None       # teach jobs; a fresh temporary folder when None
    engine: str = "auto"

    def check(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise HeadstartError(
                f"binding to {self.host!r} makes the server reachable from other machines, so it needs a "
                "token: pass --token SECRET (or set HEADSTART_TOKEN); clients then send "
                "'Authorization: Bearer SECRET'. Or bind to 127.0.0.1.")
        for name in ("max_upload_mb", "max_images", "max_pixels", "max_batch", "timeout_s", "workers"):
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
        return {"id": self.id, "source": self.source, "name": self.name, "task": c.task_.name,
                "labels": list(c.classes_), "backbone": c.backbone_.name,
                "input_size": c.backbone_.preprocess.input_size, "metrics": metrics}


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

    app = FastAPI(title="headstart", version=_version(), lifespan=lifespan,
                  description="Predict images with a headstart model, or teach a new one. "
                              "Every refusal is a 4xx JSON body {\"error\": \"...\"}.")
    app.state.settings, app.state.models, app.state.jobs = settings, models, jobs
    app.add_middleware(_Guard, settings=settings)
    _add_error_handlers(app)
    app.include_router(teach_router(jobs))
    app.include_router(text_router(settings))  # texts: serve/text.py
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _info_routes(app, models, jobs, settings)
    _predict_route(app, models, settings)
    return app


def _info_routes(app: FastAPI, models: Models, jobs, settings: ServeSettings) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="Liveness: the server answers")
    def healthz() -> dict:
        return {"status": "ok", "models": [m.id for m in models.all()], "teach_busy": jobs.busy(),
                "batching": {m.id: asdict(m.batcher.stats) for m in models.all()}}

    @app.get("/v1/model", summary="The model's task, labels, backbone and metrics")
    def model_info(model: str | None = Query(None, description="model id (default: the served model)")) -> dict:
        m = models.get(model)
        return {**m.info(), "default": m.id == models.default_id,
                "models": [x.id for x in models.all()],
                "limits": {"max_upload_mb": settings.max_upload_mb, "max_images": settings.max_images,
                           "max_pixels": settings.max_pixels}}


def _predict_route(app: FastAPI, models: Models, settings: ServeSettings) -> None:
    @app.post("/v1/predict", summary="Predict one or several images (multipart field 'images')")
    async def predict(request: Request,
                      images: list[UploadFile] = File(..., description="one or more image files"),
                      top_k: int = Query(3, ge=1, le=100, description="how many labels per image"),
                      model: str | None = Query(None, description="model id (default: the served model)")
                      ) -> JSONResponse:
        t0 = time.perf_counter()
        m = models.get(model)
        if len(images) > settings.max_images:
            raise Rejection(413, f"{len(images)} images in one request; this server takes at most "
                                 f"{settings.max_images} (--max-images): split them over several requests.")
        datas = [await f.read() for f in images]
        names = [f.filename for f in images]
        pred = m.predictor

        def prepare_all(blobs: list[bytes]) -> list:  # decoded and preprocessed, off the event loop
            return [decode_upload(d, n, i, max_pixels=settings.max_pixels, preprocess=pred.preprocess)
                    for i, (d, n) in enumerate(zip(blobs, names))]

        inputs = await run_in_threadpool(prepare_all, datas)
        del datas  # the raw bytes are no longer needed while the batch waits
        fut = m.batcher.submit(inputs, top_k)
        remaining = settings.timeout_s - (time.perf_counter() - request.scope["headstart.t0"])
        try:
            rows = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=max(0.01, remaining))
        except asyncio.TimeoutError:
            fut.cancel()
            raise Rejection(408, f"the prediction did not finish within {settings.timeout_s:g} s (the server is "
                                 "busy); try again, or send fewer images per request.") from None
        preds = [{"file": names[i] or describe(i, None), **r} for i, r in enumerate(rows)]
        # A plain JSONResponse: the rows are JSON already, FastAPI's encoder would only walk them again.
        return JSONResponse({"model": m.id, "predictions": preds, "seconds": round(time.perf_counter() - t0, 4)})


# ---- limits, token and JSON errors ------------------------------------------------------

class _Guard:
    """Pure ASGI middleware: token, body size (declared and counted) and receive deadline.

    It answers before reading the body where it can (a declared oversize body, a wrong
    token), so a refused request costs the server almost nothing.
    """

    def __init__(self, app, settings: ServeSettings):
        self.app = app
        self.settings = settings
        self.max_bytes = int(settings.max_upload_mb * 1024 * 1024)
        self.token = settings.token.encode() if settings.token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope["headstart.t0"] = t0 = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        if self.token and path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
            auth = headers.get(b"authorization", b"")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not given or not hmac.compare_digest(given, self.token):
                what = "a wrong token" if given else "no token"
                return await _send_json(send, 401, f"this server needs a token and the request has {what}: "
                                        "send the header 'Authorization: Bearer TOKEN' (the token the server was "
                                        "started with).", {"www-authenticate": "Bearer"})
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._too_large(int(declared)), {"connection": "close"})
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            remaining = self.settings.timeout_s - (time.perf_counter() - t0)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.01, remaining))
            except asyncio.TimeoutError:
                raise _record(scope, Rejection(408, f"the request body did not arrive within "
                                                    f"{self.settings.timeout_s:g} s; send it faster or smaller.")) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _record(scope, Rejection(413, self._too_large(received, counted=True)))
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Rejection as e:
            if not started:
                await _send_json(send, e.status, e.message, {"connection": "close"})

    def _too_large(self, n: int, counted: bool = False) -> str:
        size = f"more than {n / 1048576:.1f} MB" if counted else f"{n / 1048576:.1f} MB"
        return (f"the request body is {size}; this server takes at most {self.settings.max_upload_mb:g} MB "
                "per request (--max-upload-mb): send fewer or smaller images per request.")


def _record(scope, rejection: Rejection) -> Rejection:
    # FastAPI turns errors raised while it parses the form into a generic 400; the handler
    # below finds the real reason here.
    scope["headstart.rejection"] = rejection
    return rejection


async def _send_json(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(Rejection)
    async def _rejection(request: Request, e: Rejection):
        return error(e.status, e.message)

    @app.exception_handler(HeadstartError)
    async def _headstart(request: Request, e: HeadstartError):
        return error(422, str(e))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        recorded = request.scope.get("headstart.rejection")
        if recorded is not None:
            return error(recorded.status, recorded.message, {"connection": "close"})
        if e.status_code == 404:
            return error(404, f"nothing at {request.method} {request.url.path}; see /docs for the API.")
        if e.status_code == 405:
            return error(405, f"{request.url.path} does not take {request.method}; see /docs for the API.")
        if e.status_code == 400 and request.method == "POST":
            return error(400, f"the body could not be read as multipart/form-data ({e.detail}): send the images "
                              "as multipart file parts named 'images' (e.g. curl -F images=@photo.jpg).")
        return error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        recorded = request.scope.get("headstart.rejection")
        if recorded is not None:
            return error(recorded.status, recorded.message, {"connection": "close"})
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            got = f" (got {err['input']!r})" if err.get("type") != "missing" and "input" in err and \
                not isinstance(err["input"], (bytes, dict, list)) else ""
            parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
        hint = ""
        if any(err.get("loc", (None, None))[-1] == "images" for err in e.errors()):
            hint = " Send the images as multipart file parts named 'images' (e.g. curl -F images=@photo.jpg)."
        return error(422, "the request is not what this endpoint takes: " + "; ".join(parts) + "." + hint)


def _version() -> str:
    from .._version import __version__

    return __version__
