"""``headstart serve [MODEL_DIR]``: the HTTP API and the page (teach-only without a model)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import HeadstartError
from .common import ENGINES

TOKEN_ENV = "HEADSTART_TOKEN"


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP with a web page to try it and teach a new one",
                       description="Serve MODEL_DIR over HTTP: POST /v1/predict, GET /v1/model, GET /healthz, "
                                   "API docs at /docs and a page at / to try images and teach a new model. "
                                   "Without MODEL_DIR the page starts in teach-only mode.",
                       epilog="What is exposed: anyone who can reach the address can predict, read the model's "
                              "labels and metrics, start teach jobs (which use CPU and disk: each keeps its "
                              "examples and model, the last 3 jobs are kept, no shared feature cache) and download "
                              "the taught models. --token T requires 'Authorization: Bearer T' on all of it "
                              "(except the page's own HTML, JS and CSS); without a token only loopback binds are "
                              "allowed. With or without one, requests whose Host header is not a name the server "
                              "is bound to are refused (DNS rebinding), and so are POSTs from other web origins "
                              "(a page on another site cannot drive it).")
    p.add_argument("model", nargs="?", metavar="MODEL_DIR", help="model folder (optional: teach-only without it)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on every request (default: ${TOKEN_ENV})")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body in MB (default 64)")
    p.add_argument("--max-images", type=int, default=32, help="most images in one prediction request (default 32)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="largest image in pixels, read from its header before decoding (default 40,000,000)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long to wait for concurrent requests to join a batch (default 5 ms)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per model call (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="batches computed at once, the cores shared out between them "
                        "(default: one per core, at most 4)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to receive a request and answer it, else 408 (default 30)")
    p.add_argument("--max-request-pixels", type=int, default=100_000_000,
                   help="most pixels in all the images of one prediction request, from their headers "
                        "(default 100,000,000): 413")
    p.add_argument("--max-pending-mb", type=float, default=512.0,
                   help="memory that requests in flight may hold for their bytes, decoding and model inputs, "
                        "estimated before decoding; beyond it requests get 503 + Retry-After (default 512)")
    p.add_argument("--max-queued-images", type=int, default=256,
                   help="images in flight at most, shared fairly between the clients (by address) sending; "
                        "beyond it requests get 503 + Retry-After (default 256)")
    p.add_argument("--max-teach-images", type=int, default=2000, help="most images in one teach request (default 2000)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (repeatable; '*' for any). Default: the bound address, "
                        "and localhost / 127.0.0.1 / ::1 on loopback; any name when bound to 0.0.0.0 or ::")
    p.add_argument("--idle-timeout", type=float, default=15.0,
                   help="seconds a connection has to send a request's headers, from its start or its last "
                        "answer, else it is closed (default 15)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="open connections at most; a new one closes the oldest idle one, or gets 503 (default 256)")
    p.add_argument("--work-dir", help="folder for teach jobs (default: a temporary folder removed at exit)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="how the backbone runs (default auto: ONNX Runtime, which gives memory back at rest; openvino is faster but keeps its buffers)")
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.app import ServeSettings, create_app
    from ..serve.server import run

    if args.model and not os.path.isdir(args.model):
        raise HeadstartError(f"model folder {args.model!r} does not exist: give a folder written by "
                             "`headstart train --out DIR`, or leave it out to start in teach-only mode.")
    settings = ServeSettings(
        model_dir=args.model, host=args.host, port=args.port, token=args.token or os.environ.get(TOKEN_ENV) or None,
        max_upload_mb=args.max_upload_mb, max_images=args.max_images, max_pixels=args.max_pixels,
        batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch, timeout_s=args.timeout,
        **({"workers": args.workers} if args.workers is not None else {}),
        work_dir=args.work_dir, engine=args.engine, max_request_pixels=args.max_request_pixels,
        max_pending_mb=args.max_pending_mb, max_queued_images=args.max_queued_images, max_teach_images=args.max_teach_images,
        allowed_hosts=tuple(args.allowed_host), idle_timeout_s=args.idle_timeout, max_connections=args.max_connections)
    app = create_app(settings)
    what = f"model {os.path.basename(os.path.abspath(args.model))!r}" if args.model else "teach-only mode (no model yet)"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"headstart serving {what} at http://{host}:{args.port}/  (API docs: /docs"
          + (", token required" if settings.token else "") + ")", file=sys.stderr, flush=True)
    run(app, host=args.host, port=args.port, idle_timeout=settings.idle_timeout_s,
        max_connections=settings.max_connections)
    return 0
