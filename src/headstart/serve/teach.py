"""The teach view's server side: named classes of uploaded examples -> a trained model.

A job writes the examples into a server-side work folder (``<work>/jobs/<id>/data/{train,val}/<class>/``,
every class keeping at least one validation image), trains with ``ImageClassifier`` on the
embedded backbone (features go through the usual feature cache), saves the model folder and
zips it for download, then hands the model to the server to predict with: all of it through the
Python API (``ImageClassifier.fit``), whose progress the page shows. One job at a time:
a second request while one runs is answered 409 with what is running.
"""

from __future__ import annotations

import gc
import io
import json
import re
import shutil
import tempfile
import threading
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import HeadstartError
from .contract import CLASS_NAME_PATTERN, read_form, responses, teach_body
from .uploads import Rejection, decode_upload

MIN_PER_CLASS = 2           # one to train on and one to validate with, at least
MAX_CLASSES = 50
MAX_NAME = 64
KEEP_JOBS = 3               # older job folders are removed (they are the server's own files)
_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class Job:
    id: str
    labels: list[str]
    counts: dict[str, int]
    status: str = "running"          # "running" | "done" | "failed"
    stage: str = "queued"            # queued -> features -> training -> saving -> done
    progress: float = 0.0            # 0..1
    message: str = "waiting to start"
    error: str | None = None
    model_id: str | None = None
    metrics: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    seconds: float | None = None

    def public(self) -> dict:
        return {"id": self.id, "status": self.status, "stage": self.stage, "progress": round(self.progress, 3),
                "message": self.message, "error": self.error, "labels": self.labels, "counts": self.counts,
                "model": self.model_id, "metrics": self.metrics,
                "seconds": self.seconds if self.seconds is not None else round(time.time() - self.started, 1),
                "download": f"/v1/teach/jobs/{self.id}/model.zip" if self.status == "done" else None}


class TeachJobs:
    """Runs teach jobs one at a time in a background thread; ``on_model(job, clf)`` gets each result."""

    def __init__(self, settings, on_model: Callable):
        self.settings = settings
        self.on_model = on_model
        self._own_dir = settings.work_dir is None
        self.root = Path(settings.work_dir or tempfile.mkdtemp(prefix="headstart-teach-"))
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None

    def busy(self) -> bool:
        return self._current is not None and self._current.status == "running"

    def current(self) -> Job | None:
        return self._current

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise Rejection(404, f"no teach job {job_id!r} on this server (jobs are kept until it stops; "
                                 f"the last {KEEP_JOBS} only).")
        return job

    def check_idle(self) -> None:
        job = self._current
        if job is not None and job.status == "running":
            raise Rejection(409, f"a model is already being trained (job {job.id}: {job.stage}, "
                                 f"{job.progress:.0%}); one job at a time. Wait until GET /v1/teach/jobs/{job.id} "
                                 "says done, then train again.")

    def start(self, examples: list[tuple[str, str | None, bytes]]) -> Job:
        """``examples``: (class name, file name, bytes) per image, already checked by ``check_examples``."""
        with self._lock:
            self.check_idle()
            counts: dict[str, int] = {}
            for label, _, _ in examples:
                counts[label] = counts.get(label, 0) + 1
            job = Job(uuid.uuid4().hex[:8], sorted(counts), dict(sorted(counts.items())))
            self._jobs[job.id] = job
            self._current = job
        self._forget_old()
        job_dir = self.root / "jobs" / job.id
        try:
            _write_examples(job_dir / "data", examples)
        except Exception:
            job.status, job.error, job.stage = "failed", "could not write the examples to the work folder", "failed"
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        threading.Thread(target=self._run, args=(job, job_dir), name=f"headstart-teach-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, job_dir: Path) -> None:
        from ..backbones.engines import OnnxEngine
        from ..estimator import ImageClassifier
        from .guard import release_memory
        from .predictor import serving_engine

        t0 = time.perf_counter()
        job.stage, job.progress, job.message = "features", 0.02, "computing features"
        used = [sum(job.counts.values())]  # images the fit reads: fewer than sent when some are duplicates

        def on_progress(stage: str, done: int, total: int) -> None:  # the page shows real progress
            used[0] = total
            job.progress = 0.02 + 0.7 * done / max(1, total)
            job.message = f"features: {done} of {total} images"
            if done >= total:
                job.stage, job.progress, job.message = "training", 0.75, "training the head on the features"

        try:
            # No shared feature cache: each job's disk use ends with its folder (the last KEEP_JOBS are kept).
            clf = ImageClassifier(engine=serving_engine(self.settings.engine), val_fraction=0.0, test_fraction=0.0,
                                  use_cache=False)
            clf.fit(job_dir / "data", on_progress=on_progress)
            job.stage, job.progress, job.message = "saving", 0.95, "saving the model folder"
            folder = clf.save(job_dir / f"headstart-model-{job.id}")
            _zip_folder(folder, job_dir / "model.zip")
            clf.config_ = json.loads((folder / "config.json").read_text())  # as load() gives: when, backbone
            job.metrics = teach_metrics(clf, job_dir / "data")
            job.model_id = f"taught-{job.id}"
            self.on_model(job, clf)
            job.stage, job.progress, job.status = "done", 1.0, "done"
            job.message = _trained_message(sum(job.counts.values()), used[0], job.metrics["validation_images"],
                                           time.perf_counter() - t0)
        except HeadstartError as e:
            job.status, job.stage, job.error, job.message = "failed", "failed", str(e), "training failed"
        except Exception as e:  # the server keeps serving; the page shows why
            job.status, job.stage, job.message = "failed", "failed", "training failed"
            job.error = f"training failed: {type(e).__name__}: {e}"
        finally:
            job.seconds = round(time.perf_counter() - t0, 2)
            OnnxEngine.close_arena_sessions()  # extraction's arena would stay at its largest batch
            gc.collect()  # the fit's cycles (torch modules, the losing candidates), then their pages
            release_memory()

    def _forget_old(self) -> None:
        with self._lock:
            old = list(self._jobs)[:-KEEP_JOBS]
            for job_id in old:
                del self._jobs[job_id]
        for job_id in old:
            shutil.rmtree(self.root / "jobs" / job_id, ignore_errors=True)

    def close(self) -> None:
        if self._own_dir and not self.busy():
            shutil.rmtree(self.root, ignore_errors=True)


def teach_metrics(clf, data: Path) -> dict:
    """The taught model on its validation images, as Teachable Machine's "under the hood" shows
    it: accuracy, per-class accuracy (recall) with image counts, the confusion matrix (rows true,
    columns predicted) and the per-epoch curves (training loss, validation accuracy and loss)."""
    files = sorted(p for p in (data / "val").glob("*/*") if p.is_file())
    targets = [p.parent.name for p in files]
    m = clf.task_.metrics(clf.predict_proba(files), targets)
    labels = list(m["labels"])
    return {"validation_accuracy": clf.metrics_["validation"]["score"], "validation_images": len(files),
            "labels": labels, "confusion_matrix": m["confusion_matrix"],
            "per_class": {k: {"accuracy": v["recall"], "images": v["support"]} for k, v in m["per_class"].items()},
            "history": [{k: r[k] for k in ("epoch", "loss", "val_score", "val_loss") if k in r} for r in clf.history_],
            "kept_epoch": clf.metrics_["validation"].get("best_epoch")}


def _trained_message(sent: int, used: int, n_val: int, seconds: float) -> str:
    """One count of images from upload to result: the progress said ``used``, the result says it too."""
    left = f" ({sent - used} of the {sent} sent left out: exact duplicates or unreadable)" if used < sent else ""
    return f"trained on {used - n_val} images and checked on {n_val}{left}, in {seconds:.1f} s"


def check_class_name(name: str) -> str:
    """A class name becomes a folder name on the server: refuse what could escape or hide
    (``contract.CLASS_NAME_PATTERN``, the rule the API's schema states)."""
    if len(name) > MAX_NAME or not re.fullmatch(CLASS_NAME_PATTERN, name):
        raise Rejection(422, f"class name {name[:100]!r} cannot be used: give 1-{MAX_NAME} characters, not starting "
                             "with '.' or a space nor ending with a space, without / \\ : * ? \" < > | or control "
                             "characters.")
    return unicodedata.normalize("NFC", name)


def check_examples(labels: list[str], files: list[tuple[str | None, bytes]], settings,
                   deadline: float = float("inf")) -> list[tuple[str, str | None, bytes]]:
    """Pair labels with files and check them all by ``deadline`` (``time.perf_counter``);
    raises ``Rejection`` naming the first problem."""
    if len(labels) != len(files):
        raise Rejection(422, f"{len(files)} images but {len(labels)} labels: send one 'labels' field per "
                             "'images' part, in the same order.")
    if len(files) > settings.max_teach_images:
        raise Rejection(413, f"{len(files)} images in one teach request; this server takes at most "
                             f"{settings.max_teach_images}.")
    names = [check_class_name(x) for x in labels]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    if len(counts) < 2 or len(counts) > MAX_CLASSES:
        raise Rejection(422, f"teaching needs 2 to {MAX_CLASSES} classes, got {len(counts)}: {sorted(counts)}. "
                             "Add a class and give it some example images.")
    few = {k: v for k, v in counts.items() if v < MIN_PER_CLASS}
    if few:
        raise Rejection(422, f"each class needs at least {MIN_PER_CLASS} example images (one is kept to check "
                             f"the model); these have fewer: {few}.")
    for i, (filename, data) in enumerate(files):
        if time.perf_counter() > deadline:
            raise Rejection(408, f"checking the {len(files)} images took longer than {settings.timeout_s:g} s "
                                 f"(stopped at image {i + 1}); send smaller images.")
        decode_upload(data, filename, i, max_pixels=settings.max_pixels, draft_size=64)
    return [(n, f, d) for n, (f, d) in zip(names, files)]


def _write_examples(data: Path, examples: list[tuple[str, str | None, bytes]]) -> None:
    """Every 4th image of a class (and at least one) goes to val/, the rest to train/."""
    seen: dict[str, int] = {}
    for label, _, raw in examples:
        i = seen[label] = seen.get(label, -1) + 1
        split = "val" if i % 4 == 1 else "train"
        with Image.open(io.BytesIO(raw)) as img:
            ext = _EXT.get(img.format or "")
            target = data / split / label / f"{i:05d}{ext or '.png'}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if ext:
                target.write_bytes(raw)
            else:  # a format the scanner does not list (e.g. ICO, PPM): keep the pixels as PNG
                img.save(target, format="PNG")


def _zip_folder(folder: Path, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    tmp.replace(out)


_JOB_LINKS = {  # the job a POST started, for clients (and the fuzzer's stateful phase) to follow
    "GetJob": {"operationId": "job_state", "parameters": {"job_id": "$response.body#/id"},
               "description": "the job's progress"},
    "GetModelZip": {"operationId": "download", "parameters": {"job_id": "$response.body#/id"},
                    "description": "its model, once done"}}


def teach_router(jobs: TeachJobs) -> APIRouter:
    router = APIRouter(prefix="/v1/teach", tags=["teach"])

    settings = jobs.settings
    token = bool(settings.token)

    @router.get("", operation_id="teach_state", summary="Whether a job is running, and the latest job", responses=responses(token=token))
    def teach_state() -> dict:
        job = jobs.current()
        return {"busy": jobs.busy(), "job": job.public() if job else None,
                "limits": {"min_per_class": MIN_PER_CLASS, "max_classes": MAX_CLASSES,
                           "max_images": settings.max_teach_images, "jobs_kept": KEEP_JOBS}}

    @router.post("/jobs", operation_id="start_job", status_code=202, summary="Train a new model from labelled example images",
                 openapi_extra=teach_body(settings.max_teach_images, MIN_PER_CLASS, MAX_CLASSES, MAX_NAME),
                 responses={202: {"description": "the job, started", "links": _JOB_LINKS},
                            **responses(403, 409, 415, 422, 503, token=token)})
    async def start_job(request: Request) -> dict:
        jobs.check_idle()  # answer 409 before reading and checking every image
        n = settings.max_teach_images
        files, fields = await read_form(request, files={"images": n}, fields={"labels": n})
        deadline = request.scope["headstart.t0"] + settings.timeout_s
        examples = await run_in_threadpool(check_examples, fields["labels"], files["images"], settings, deadline)
        del files
        job = await run_in_threadpool(jobs.start, examples)
        return job.public()

    @router.get("/jobs/{job_id}", operation_id="job_state", summary="A teach job's progress and result", responses=responses(404, token=token))
    def job_state(job_id: str) -> dict:
        return jobs.get(job_id).public()

    @router.get("/jobs/{job_id}/model.zip", operation_id="download", summary="The trained model folder as a zip (once the job is done)",
                response_class=FileResponse, responses={
                    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                          "description": "the model folder, zipped"},
                    **responses(404, 409, token=token)})
    def download(job_id: str) -> FileResponse:
        job = jobs.get(job_id)
        if job.status != "done":
            raise Rejection(409, f"job {job_id} is {job.status} ({job.stage}); its model can be downloaded once it is done.")
        return FileResponse(jobs.root / "jobs" / job.id / "model.zip", media_type="application/zip",
                            filename=f"headstart-model-{job.id}.zip")

    return router

