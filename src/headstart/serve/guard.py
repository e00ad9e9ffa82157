"""What keeps a server on 127.0.0.1 from being driven by web pages, and its memory bounded.

- ``OriginGuard`` (ASGI middleware): the ``Host`` header must be a name the server answers to
  (DNS rebinding: a page on ``attacker.example`` that resolves to 127.0.0.1 sends its own name),
  and a state-changing request from another web origin (``Origin``, ``Sec-Fetch-Site``) is
  refused: a multipart POST needs no CORS preflight, so without this any page could start
  teach jobs. Clients that are not browsers send neither header and pass.
- ``Budget``: the memory that requests in flight may hold for their raw bytes (counted as they
  arrive), decoding and model inputs (estimated from the images' headers before anything is
  decoded); a request that does not fit is answered 503 with ``Retry-After``.
- ``ClientShare``: the images each client (peer address) has in flight; while several clients
  send, each may hold only its share of the queue, so one client's flood cannot lock the
  others out (the batcher then serves the clients in turn).
- ``SizeTokenGuard`` (ASGI middleware): the token, the body size (declared and counted), the
  body's bytes inside the ``Budget`` as they arrive, and the receive deadline, answered before
  the body is read where possible.
- ``release_memory``: hands freed heap pages back to the system once nothing is in flight;
  ``fix_mmap_threshold`` keeps large buffers out of the heap in the first place.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hmac
import ipaddress
import json
import threading
import time
from urllib.parse import urlsplit

from .uploads import Rejection

PUBLIC_PATHS = ("/", "/favicon.ico")  # the page shell holds no data; it asks for the token
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(bind: str, extra: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The Host names accepted for a server bound to ``bind``; None: any (a wildcard bind
    with no --allowed-host, where the token is the protection)."""
    names = [h.lower().strip("[]") for h in extra]
    if "*" in names:
        return None
    if _is_wildcard(bind):
        return tuple(names) if names else None
    base = LOOPBACK_NAMES if _is_loopback(bind) else ()
    return tuple(dict.fromkeys([bind.lower().strip("[]"), *base, *names]))


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class OriginGuard:
    """Pure ASGI middleware: 400 for a Host the server does not answer to, 403 for a
    cross-origin state-changing request."""

    def __init__(self, app, hosts: tuple[str, ...] | None):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return await _refuse(send, 400, f"this server does not answer to the Host {host[:100]!r} (it answers to "
                                            f"{', '.join(self.hosts)}): a page on another name may be trying to reach "
                                            "it (DNS rebinding). To allow a name, start it with --allowed-host NAME.")
        if scope.get("method", "").encode() not in SAFE_METHODS:
            why = _cross_origin(headers, host)
            if why:
                return await _refuse(send, 403, f"refused a {scope['method']} from another web origin ({why}): "
                                                "only this server's own page, or a client that is not a browser, "
                                                "may send it.")
        return await self.app(scope, receive, send)


def _cross_origin(headers: dict[bytes, bytes], host: str) -> str | None:
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1")
    parts = urlsplit(text)
    if text == "null" or parts.netloc.lower() != host.lower():
        return f"Origin: {text[:100]}"
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Budget:
    """``take(nbytes)`` or a 503 ``Rejection``; ``give(nbytes)`` when the request is done."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used and self.used + n > self.capacity:
                raise Busy(f"the server is busy with other images ({self.used / 2**20:.0f} of "
                           f"{self.capacity / 2**20:.0f} MB of uploads, decoding and model inputs in flight, "
                           "--max-pending-mb); try again in a moment.")
            self.used += n
            self.peak = max(self.peak, self.used)

    def give(self, n: int) -> bool:
        """True when nothing is left in flight."""
        with self._lock:
            self.used = max(0, self.used - n)
            return self.used == 0


class Busy(Rejection):
    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(503, message)
        self.retry_after = retry_after


class ClientShare:
    """Images in flight (admitted, not yet answered) per client.

    A client with nothing in flight is admitted while the server holds fewer than ``capacity``
    images (plus one request's worth kept for newcomers); one that already has images in
    flight only up to ``capacity`` divided between the clients now sending.
    """

    def __init__(self, capacity: int, per_request: int):
        self.capacity = capacity
        self.per_request = per_request
        self.held: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, client: str, n: int) -> None:
        with self._lock:
            mine = self.held.get(client, 0)
            sending = len(self.held) + (0 if mine else 1)
            share = max(self.per_request, self.capacity // sending)
            if mine and mine + n > share:
                raise Busy(f"this client already has {mine} images in flight, and the server shares its "
                           f"{self.capacity} places (--max-queued-images) between the {sending} clients "
                           f"sending now ({share} each); wait for your answers, then send more.")
            total = sum(self.held.values())
            if total + n > self.capacity + (0 if mine else self.per_request):
                raise Busy(f"the server is busy: {total} images are in flight (--max-queued-images "
                           f"{self.capacity}); try again in a moment.")
            self.held[client] = mine + n

    def give(self, client: str, n: int) -> None:
        with self._lock:
            left = self.held.get(client, 0) - n
            if left > 0:
                self.held[client] = left
            else:
                self.held.pop(client, None)


def client_of(scope) -> str:
    """The peer address (behind a reverse proxy every request has the proxy's)."""
    peer = scope.get("client")
    return str(peer[0]) if peer else "?"


_libc = None
M_MMAP_THRESHOLD = -3     # mallopt's parameter number (glibc's malloc.h)
MMAP_THRESHOLD = 256 * 1024


def _glibc():
    """glibc's malloc functions, or False (musl, macOS: no ``malloc_trim``)."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
            _libc and _libc.malloc_trim and _libc.mallopt  # noqa: B018
        except (OSError, AttributeError):
            _libc = False
    return _libc


def release_memory() -> None:
    """glibc keeps freed memory in its per-thread arenas; ``malloc_trim`` returns it (a no-op elsewhere)."""
    if _glibc():
        _libc.malloc_trim(0)


def fix_mmap_threshold() -> bool:
    """Serve every block of 256 KB and more from its own mapping, given back when freed.

    glibc raises its threshold up to 32 MB each time such a block is freed, so after a teach job
    (or the first batches) the engines' multi-MB buffers land in the heap, where a few live
    objects keep their pages: ~0.1 GB held for good (docs/benchmarks.md). False where not glibc."""
    return bool(_glibc() and _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class SizeTokenGuard:
    """Pure ASGI middleware: token, body size (declared and counted) and receive deadline.

    It answers before reading the body where it can (a declared oversize body, a wrong
    token), so a refused request costs the server almost nothing.
    """

    def __init__(self, app, settings, budget: Budget | None = None):
        self.app = app
        self.settings = settings
        self.budget = budget
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
        if declared is not None and declared.isdigit() and self._over_budget(int(declared)):
            return await _send_json(send, 413, self._over_budget(int(declared)), {"connection": "close"})
        received = held = 0
        started = False

        async def limited_receive():
            nonlocal received, held
            remaining = self.settings.timeout_s - (time.perf_counter() - t0)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.01, remaining))
            except asyncio.TimeoutError:
                raise _record(scope, Rejection(408, f"the request body did not arrive within "
                                                    f"{self.settings.timeout_s:g} s; send it faster or smaller.")) from None
            if message["type"] == "http.request":
                n = len(message.get("body", b""))
                received += n
                if received > self.max_bytes:
                    raise _record(scope, Rejection(413, self._too_large(received, counted=True)))
                if self.budget is not None and n:  # the raw bytes are held until the request ends
                    if self._over_budget(received):
                        raise _record(scope, Rejection(413, self._over_budget(received)))
                    try:
                        self.budget.take(n)
                    except Busy as e:
                        raise _record(scope, e) from None
                    held += n
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
                extra = {"retry-after": str(e.retry_after)} if isinstance(e, Busy) else {}
                await _send_json(send, e.status, e.message, {"connection": "close", **extra})
        finally:
            if held and self.budget.give(held):
                asyncio.get_running_loop().run_in_executor(None, release_memory)

    def _over_budget(self, n: int) -> str | None:
        """Why a body of ``n`` bytes can never fit the memory budget, or None."""
        if self.budget is None or n <= self.budget.capacity:
            return None
        return (f"the request body is over {n / 1048576:.1f} MB, more than the memory this server gives all "
                f"requests in flight ({self.budget.capacity / 1048576:.0f} MB, --max-pending-mb): send fewer or "
                "smaller images per request.")

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
