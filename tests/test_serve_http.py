"""``headstart serve`` as a real subprocess on a loopback port, spoken to over HTTP.

One server (token, small limits, a long batch wait so concurrent requests visibly batch)
is shared by the module; every refusal must be a 4xx JSON ``{"error": ...}`` and the server
must go on answering good requests afterwards.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import make_png_bomb, truncate_file, write_image
from serve_server import Server, shape_folder, shape_image

TOKEN = "s3cret-token"
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    model, _ = trained_model
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = [model, "--token", TOKEN, "--max-upload-mb", "1", "--max-images", "3", "--max-pixels", "1000000",
            "--timeout", "3", "--batch-wait-ms", "60"]
    with Server(args, token=TOKEN, log=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60) as c:
        yield c


def files_of(*paths):
    return [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]


def assert_refused(r: httpx.Response, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    for f in fragments:
        assert f in message, message


def assert_still_serving(client, data_image):
    r = client.post("/v1/predict", files=files_of(data_image))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == data_image.parent.name


# ---- the API --------------------------------------------------------------------------------

def test_predict_matches_the_python_api(client, trained_model):
    from headstart import load

    model, data = trained_model
    paths = [data / "cat" / "cat_000.png", data / "fish" / "fish_003.png"]
    r = client.post("/v1/predict?top_k=2", files=files_of(*paths))
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = load(model).predict_files(paths, top_k=2)
    assert [g["file"] for g in got] == ["cat_000.png", "fish_003.png"]
    for g, w in zip(got, want):
        assert g["label"] == w["label"]
        assert g["probability"] == pytest.approx(w["probability"], abs=1e-4)
        assert [t["label"] for t in g["top"]] == [t["label"] for t in w["top"]]
        assert len(g["top"]) == 2


def test_model_info_health_docs_and_no_server_paths(client, trained_model):
    model, _ = trained_model
    info = client.get("/v1/model").json()
    assert info["labels"] == ["cat", "dog", "fish"] and info["task"] == "multiclass"
    assert info["backbone"] == "efficientnet_lite0" and "validation" in info["metrics"]
    assert str(model) not in client.get("/v1/model").text
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    page = httpx.get(client.base_url.join("/"))  # the page shell loads without the token
    assert page.status_code == 200 and "headstart" in page.text


def test_concurrent_requests_are_batched_and_all_answered(client, server, trained_model):
    _, data = trained_model
    paths = sorted(data.glob("*/*.png"))[:16]

    def one(p):
        r = client.post("/v1/predict", files=files_of(p))
        return r.status_code, r.json()["predictions"][0]["label"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, paths))
    assert all(status == 200 for status, _ in results)
    assert sum(label == p.parent.name for (_, label), p in zip(results, paths)) >= 12
    stats = client.get("/healthz").json()["batching"]["served"]
    assert stats["largest"] > 1, stats  # some requests shared one model call


# ---- token ----------------------------------------------------------------------------------

def test_token_is_checked_on_every_request(server, trained_model):
    _, data = trained_model
    for path in ("/healthz", "/v1/model", "/docs"):
        assert_refused(httpx.get(server.url + path), 401, "needs a token", "no token")
    r = httpx.post(server.url + "/v1/predict", files=files_of(data / "cat" / "cat_000.png"),
                   headers={"Authorization": "Bearer wrong"})
    assert_refused(r, 401, "wrong token")
    assert r.headers["www-authenticate"] == "Bearer"


def test_non_loopback_host_without_token_refuses_to_start(trained_model, monkeypatch):
    monkeypatch.delenv("HEADSTART_TOKEN", raising=False)
    model, _ = trained_model
    p = subprocess.run([sys.executable, "-m", "headstart.cli", "serve", str(model), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "'0.0.0.0'" in p.stderr and "--token" in p.stderr and "HEADSTART_TOKEN" in p.stderr


# ---- limits and bad input -------------------------------------------------------------------

def test_each_bad_upload_is_a_4xx_json_and_the_server_keeps_serving(client, trained_model, tmp_path):
    _, data = trained_model
    good = data / "dog" / "dog_001.png"
    text = tmp_path / "notes.png"
    text.write_text("not an image at all, whatever the name says")
    truncated = truncate_file(write_image(tmp_path / "t.png", (200, 200)), 0.4)
    bomb = make_png_bomb(tmp_path / "bomb.png", 20000, 20000)
    big = write_image(tmp_path / "big.png", (1200, 1000), color=(9, 9, 9), noise=0)  # 1.2 MP > 1 MP

    assert_refused(client.post("/v1/predict", files=files_of(text)), 415, "image 1 ('notes.png')", "not an image")
    assert_refused(client.post("/v1/predict", files=files_of(good, truncated)), 422, "image 2 ('t.png')")
    assert_refused(client.post("/v1/predict", files=files_of(bomb)), 413, "decompression bomb", "1,000,000")
    bomb_small = make_png_bomb(tmp_path / "bomb2.png", 5000, 5000)  # opens, but is over the limit
    assert_refused(client.post("/v1/predict", files=files_of(bomb_small)), 413, "5000x5000", "1,000,000")
    assert_refused(client.post("/v1/predict", files=files_of(big)), 413, "1200x1000")
    assert_refused(client.post("/v1/predict", files=files_of(good, good, good, good)), 413, "4 images", "at most 3")
    assert_refused(client.post("/v1/predict", files=[("images", ("e.png", b"", "image/png"))]), 422, "empty")
    assert_refused(client.post("/v1/predict", data={"x": "1"}), 415, "images", "multipart")
    assert_refused(client.post("/v1/predict", files=files_of(good), data={"x": "1"}), 422, "unknown form field 'x'")
    assert_refused(client.post("/v1/predict", files={"other": ("a.png", good.read_bytes())}), 422, "'other'")
    big_json = {"images": "x" * 118_000}  # refused by its type, and nothing of it echoed back
    r = client.post("/v1/predict", json=big_json)
    assert_refused(r, 415, "application/json", "multipart/form-data")
    assert len(r.content) < 1000
    assert_refused(client.post("/v1/predict", content=b"garbage--zz\r\nnot multipart", headers={
        "content-type": "multipart/form-data; boundary=zz"}), 400, "multipart/form-data")
    assert_refused(client.post("/v1/predict?top_k=0", files=files_of(good)), 422, "top_k")
    assert_refused(client.post("/v1/predict?model=nope", files=files_of(good)), 404, "'nope'", "served")
    assert_refused(client.get("/v1/nothing"), 404, "/v1/nothing")
    r = client.get("/v1/predict")
    assert_refused(r, 405)
    assert r.headers["allow"] == "POST"  # RFC 9110: a 405 says what the path takes
    assert_still_serving(client, good)


def test_oversize_bodies_are_refused_declared_or_streamed(client, server, trained_model):
    _, data = trained_model
    blob = b"\0" * (3 * 1024 * 1024)
    r = client.post("/v1/predict", files=[("images", ("big.png", blob, "image/png"))])
    assert_refused(r, 413, "at most 1 MB")

    def chunks():  # no Content-Length: the server counts what arrives
        yield (b'--q\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(12):
            yield b"\0" * (256 * 1024)

    try:
        r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=q"})
        assert_refused(r, 413, "more than", "at most 1 MB")
    except httpx.TransportError:
        pass  # the server may close before the client finishes sending; it must survive either way
    assert_still_serving(client, data / "cat" / "cat_001.png")


def _raw(server, head: bytes, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(head + body)
    return s


def test_slow_upload_times_out_and_a_vanished_client_costs_nothing(client, server, trained_model):
    _, data = trained_model
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n").encode()
    gone = _raw(server, head, b"--b\r\n")
    gone.close()  # disconnects mid-upload
    slow = _raw(server, head, b"--b\r\n")
    t0 = time.monotonic()
    reply = b""
    while chunk := slow.recv(65536):  # the server's 3 s timeout answers, then closes
        reply += chunk
    slow.close()
    reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 408"), reply
    assert '"error"' in reply and "did not arrive within 3 s" in reply
    assert time.monotonic() - t0 < 10
    assert_still_serving(client, data / "fish" / "fish_001.png")


# ---- teach ----------------------------------------------------------------------------------

def _teach_files(root):
    folder = shape_folder(root / "shapes")
    paths = sorted(folder.glob("*/*.png"))
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]
    return files, [p.parent.name for p in paths], folder


def test_teach_requests_are_checked(client, tmp_path):
    files, labels, _ = _teach_files(tmp_path)
    assert_refused(client.post("/v1/teach/jobs", files=files, data={"labels": ["one"] * len(files)}),
                   422, "2 to 50 classes")
    assert_refused(client.post("/v1/teach/jobs", files=files, data={"labels": labels[:-1]}), 422, "labels")
    bad = [x.replace("stripes", "../stripes") for x in labels]
    assert_refused(client.post("/v1/teach/jobs", files=files, data={"labels": bad}), 422, "'../stripes'")
    assert_refused(client.post("/v1/teach/jobs", files=files[:5], data={"labels": labels[:5]}), 422,
                   "at least 2", "'stripes': 1")


def test_teach_trains_one_job_at_a_time_then_serves_and_downloads_the_model(client, tmp_path):
    from headstart import load

    files, labels, folder = _teach_files(tmp_path)
    r = client.post("/v1/teach/jobs", files=files, data={"labels": labels})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["counts"] == {"circles": 4, "stripes": 4}
    busy = client.post("/v1/teach/jobs", files=files, data={"labels": labels})
    if client.get(f"/v1/teach/jobs/{job['id']}").json()["status"] == "running":
        assert_refused(busy, 409, "already being trained", job["id"])
    deadline = time.monotonic() + 600
    while job["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.get(f"/v1/teach/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    fresh = [shape_image(tmp_path / f"new/{k}.png", k, 100) for k in ("circles", "stripes", "circles")]
    r = client.post(f"/v1/predict?model={job['model']}", files=files_of(*fresh))
    assert [p["label"] for p in r.json()["predictions"]] == ["circles", "stripes", "circles"]
    assert client.get("/v1/model").json()["id"] == "served"  # the served model stays the default
    z = client.get(job["download"])
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(z.content)).extractall(tmp_path / "unzipped")
    (model_dir,) = (tmp_path / "unzipped").iterdir()
    assert load(model_dir).predict(fresh) == ["circles", "stripes", "circles"]


def test_teach_only_mode_starts_without_a_model(tmp_path):
    with Server(["--work-dir", tmp_path / "work"]) as srv:
        assert httpx.get(srv.url + "/healthz").json()["models"] == []
        assert_refused(httpx.get(srv.url + "/v1/model"), 409, "no model is loaded yet", "Teach")
        r = httpx.post(srv.url + "/v1/predict", files=[("images", ("a.png", b"x", "image/png"))])
        assert_refused(r, 409, "no model is loaded yet")
        assert httpx.get(srv.url + "/v1/teach").json()["busy"] is False
        assert "Teach" in httpx.get(srv.url + "/").text
