"""The HTTP API's contract: what each endpoint answers and what its multipart body must hold.

The OpenAPI document at ``/openapi.json`` is built from these, so a client generated from it
knows every status code (each refusal has the same body, ``{"error": "..."}``) and the real
limits; ``read_form`` is the one place that reads a multipart body and enforces them.
"""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from .uploads import Rejection

IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"]
# A class name becomes a folder name: no path or shell-special characters, no control characters,
# not starting with '.' or a space, not ending with a space. One rule for the schema and the server.
_NOT = r'/\\:*?"<>|\x00-\x1f\x7f-\x9f'
CLASS_NAME_PATTERN = rf'^[^{_NOT}. ]([^{_NOT}]*[^{_NOT} ])?$'


class ErrorBody(BaseModel):
    """Every refusal: what happened, what was expected and how to fix it."""

    error: str


_WHY = {
    400: "the Host header is not a name this server answers to, or the body is not readable multipart",
    401: "no token or a wrong one ('Authorization: Bearer TOKEN'); only when the server was started with --token",
    403: "a state-changing request from another web origin (Origin / Sec-Fetch-Site)",
    404: "no such model, teach job or class",
    408: "the request was not received, or not answered, within --timeout",
    409: "a teach job is already running, no model is loaded yet, or the job is not done",
    413: "over a limit: body size, image count, pixels per image or per request",
    415: "the body is not multipart/form-data, or an image part is not an image",
    422: "a request that cannot be used: corrupt or empty image, unknown field, labels not matching the images, "
         "bad class name or query value",
    503: "the server is busy: too much decoding in flight or too many images waiting for the model "
         "(see Retry-After)",
}
COMMON = (400, 408, 413)  # any request: the Host check, the receive deadline, a declared oversize body


def responses(*codes: int, token: bool) -> dict:
    """The ``responses=`` of a route: each status with the shared error body."""
    out = {}
    for code in sorted({*COMMON, *codes, *((401,) if token else ())}):
        entry: dict = {"model": ErrorBody, "description": _WHY[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                "schema": {"type": "integer"}}}
        out[code] = entry
    return out


def declare_token(app) -> None:
    """With --token, the document says every operation needs a bearer token (the page shell is
    not in it)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {})["securitySchemes"] = {
                "token": {"type": "http", "scheme": "bearer", "description": "the server's --token"}}
            doc["security"] = [{"token": []}]
        return app.openapi_schema

    app.openapi = openapi


def _images(min_items: int, max_items: int, what: str) -> dict:
    return {"type": "array", "minItems": min_items, "maxItems": max_items, "description": what,
            "items": {"type": "string", "format": "binary", "minLength": 1}}


def predict_body(max_images: int) -> dict:
    """``openapi_extra`` of ``POST /v1/predict``."""
    schema = {"type": "object", "required": ["images"], "additionalProperties": False,
              "properties": {"images": _images(1, max_images, "one file part per image (JPEG, PNG, WebP, GIF, "
                                                              "BMP or TIFF, decided by the content)")}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"images": {"contentType": ", ".join(IMAGE_TYPES)}}}}}}


def explain_body() -> dict:
    """``openapi_extra`` of ``POST /v1/explain``: one image."""
    schema = {"type": "object", "required": ["image"], "additionalProperties": False,
              "properties": {"image": _images(1, 1, "one image file (JPEG, PNG, WebP, GIF, BMP or TIFF)")}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"image": {"contentType": ", ".join(IMAGE_TYPES)}}}}}}


def teach_body(max_images: int, min_per_class: int, max_classes: int, max_name: int) -> dict:
    """``openapi_extra`` of ``POST /v1/teach/jobs``."""
    least = 2 * min_per_class
    label = {"type": "string", "minLength": 1, "maxLength": max_name, "pattern": CLASS_NAME_PATTERN}
    schema = {"type": "object", "required": ["images", "labels"], "additionalProperties": False,
              "properties": {
                  "images": _images(least, max_images, "the example images, one file part each"),
                  "labels": {"type": "array", "minItems": least, "maxItems": max_images, "items": label,
                             "description": f"the class of each image, one field per 'images' part and in "
                                            f"the same order (as many labels as images); 2 to {max_classes} "
                                            f"classes, at least {min_per_class} images each"}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": schema, "encoding": {"images": {"contentType": ", ".join(IMAGE_TYPES)}}}}}}


async def read_form(request: Request, *, files: dict[str, int], fields: dict[str, int]
                    ) -> tuple[dict[str, list[tuple[str | None, bytes]]], dict[str, list[str]]]:
    """The multipart body as {file field: [(file name, bytes)]} and {text field: [values]};
    ``files`` / ``fields`` give the most parts each name may have. Anything else is refused."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise Rejection(415, f"the body is {kind or 'of no declared type'!s}, not multipart/form-data: send the "
                             "images as multipart file parts named 'images' (e.g. curl -F images=@photo.jpg).")
    try:
        # a few parts over the limits are read, so that they are refused by name
        form = await _Parser(set(files), request.headers, request.stream(), max_files=sum(files.values()) + 1,
                             max_fields=sum(fields.values()) + 8, max_part_size=1024 * 1024).parse()
    except (MultiPartException, HTTPException) as e:
        detail = getattr(e, "message", None) or getattr(e, "detail", "")
        if "Too many files" in str(detail):
            raise Rejection(413, f"too many files in one request ({detail}); this endpoint takes at most "
                                 f"{_limits(files, fields)}.") from None
        if "Too many fields" in str(detail):  # text fields the endpoint does not take, or too many labels
            raise Rejection(422, f"too many text fields in one request ({detail}); this endpoint takes "
                                 f"{_limits(files, fields)} at most, and no other fields.") from None
        raise Rejection(400, f"the body could not be read as multipart/form-data ({detail}): send the images as "
                             "multipart file parts named 'images' (e.g. curl -F images=@photo.jpg).") from None
    got_files: dict[str, list] = {k: [] for k in files}
    got_fields: dict[str, list] = {k: [] for k in fields}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile) and name in files:
                got_files[name].append((value.filename or None, await value.read()))
            elif isinstance(value, str) and name in fields:
                got_fields[name].append(value)
            elif name in files:
                raise Rejection(422, f"'{name}' must be a file part (with a filename), not a text field: "
                                     f"e.g. curl -F {name}=@photo.jpg.")
            else:
                expected = ", ".join(f"'{k}'" for k in (*files, *fields))
                raise Rejection(422, f"unknown form field {name[:64]!r}: this endpoint takes only {expected}.")
    finally:
        await form.close()
    for name, most in {**files, **fields}.items():
        n = len((got_files | got_fields)[name])
        if n > most:
            what = name if name in files else f"'{name}' fields"
            raise Rejection(413 if name in files else 422, f"{n} {what} in one request; this endpoint takes at "
                                                           f"most {most}: split them over several requests.")
    return got_files, got_fields


class _Parser(MultiPartParser):
    """Starlette's parser, with a part named as a file field kept as bytes even without a
    ``filename`` (RFC 7578 makes it optional): it would otherwise be decoded as text."""

    def __init__(self, file_fields: set[str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._file_fields = {f.encode() for f in file_fields}

    def on_header_end(self) -> None:
        if self._current_partial_header_name.lower() == b"content-disposition":
            value = self._current_partial_header_value
            _, options = parse_options_header(value)
            if options.get(b"name") in self._file_fields and b"filename" not in options:
                self._current_partial_header_value = value + b'; filename=""'
        super().on_header_end()


def _limits(files: dict[str, int], fields: dict[str, int]) -> str:
    return ", ".join(f"{n} '{k}' parts" for k, n in {**files, **fields}.items())
