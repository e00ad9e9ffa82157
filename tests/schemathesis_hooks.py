"""What Schemathesis needs to know about headstart's API beyond its schema (SCHEMATHESIS_HOOKS).

A JSON Schema cannot say "the bytes are a decodable image" or "as many labels as images", so:
- image parts (``encoding.contentType: image/...``) are real, tiny PNG / JPEG images;
- a schema-valid teach request gets labels that match its images (each of its generated
  class names twice, at least two classes), so it is a request the server can accept.
Everything else (query values, extra fields, empty bodies, bad class names, methods) is
generated from the schema as it stands.

    SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=tests \\
        schemathesis run http://127.0.0.1:8000/openapi.json --checks all
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.parameters import ParameterLocation


def _encode(size: int, colour: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt)
    return buf.getvalue()


_colours = st.tuples(*[st.integers(0, 255)] * 3)
_png = st.builds(_encode, st.integers(4, 48), _colours, st.just("PNG"))
_jpeg = st.builds(_encode, st.integers(8, 48), _colours, st.just("JPEG"))
# A multipart field of several parts: 4 to 6 images, enough for a teach request
schemathesis.openapi.media_type("image/png", st.lists(_png, min_size=4, max_size=6))
schemathesis.openapi.media_type("image/jpeg", st.lists(_jpeg, min_size=4, max_size=6))


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method == "POST" and case.path == "/v1/explain" and case.meta is not None:
        body = getattr(case.body, "body", case.body)
        if isinstance(body, dict) and isinstance(body.get("image"), list) and len(body["image"]) > 1:
            body["image"] = body["image"][:1]  # the image strategy above makes several parts; explain takes one
            case._sync_validated_hashes()
        return
    if case.method != "POST" or case.path != "/v1/teach/jobs" or case.meta is None:
        return
    if case.meta.phase.name.value == "stateful" and not _idle_waited:
        _idle_waited.append(True)
        _wait_while_busy()  # a job from an earlier phase would answer this one 409, and no links be followed
    body = getattr(case.body, "body", case.body)  # with the parts' content types, or a plain dict
    negative = case.meta.generation.mode.is_negative or case.meta.is_negative_at(ParameterLocation.BODY)
    if negative or not isinstance(body, dict):
        return
    images = body.get("images")
    n = len(images) if isinstance(images, list) else 1
    names = list(dict.fromkeys(body.get("labels") or []))[:max(2, n // 2)] or ["a"]
    if len(names) < 2:
        names.append(names[0][:60] + " two")
    # each class at least twice, as many labels as images
    body["labels"] = [names[min(i // 2, len(names) - 1)] for i in range(n)]
    # The labels are still schema-valid strings. Schemathesis would re-validate the edited body the
    # next time `case.meta` is read, and a body with bytes in it never validates as JSON: take the
    # edit as the case's starting state instead (`case.meta` itself would re-validate first).
    case._sync_validated_hashes()


_waited = []
_idle_waited = []
_server = {}  # the base URL and Authorization header, as the last answered call had them


def _wait_while_busy(seconds: float = 120) -> None:
    import time

    import httpx

    if not _server:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and httpx.get(f"{_server['base']}/v1/teach", headers=_server["auth"],
                                                     timeout=30).json().get("busy"):
        time.sleep(0.3)


@schemathesis.hook
def after_call(context, case, response):
    """The first teach job the stateful phase starts is waited for, so that following its links
    reaches a finished job (and its model.zip) and not only a running one. With
    HEADSTART_SCHEMATHESIS_LOG set, one line per call: method, path template, status."""
    import os
    import time

    import httpx

    from urllib.parse import urlsplit

    url = urlsplit(str(response.request.url))
    _server.update(base=f"{url.scheme}://{url.netloc}",
                   auth={"Authorization": response.request.headers.get("Authorization") or ""})
    if (case.method == "POST" and case.path == "/v1/teach/jobs" and response.status_code == 202 and not _waited
            and case.meta is not None and case.meta.phase.name.value == "stateful"):
        _waited.append(True)
        url = str(response.request.url).rsplit("/v1/", 1)[0] + f"/v1/teach/jobs/{response.json()['id']}"
        deadline = time.monotonic() + 120
        auth = {"Authorization": response.request.headers.get("Authorization") or ""}
        while time.monotonic() < deadline and httpx.get(url, headers=auth, timeout=30).json().get("status") == "running":
            time.sleep(0.3)
    log = os.environ.get("HEADSTART_SCHEMATHESIS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{case.method} {case.path} {response.status_code}\n")
