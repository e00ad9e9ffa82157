"""What several commands share: writing JSON atomically."""

from __future__ import annotations

import json


def write_json(path: str, payload) -> None:
    from ..model.folder import _jsonable
    from ..paths import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable))
