"""What the page shows, in headless Chromium: which model made each prediction (name, backbone,
when trained), a binary model's decision threshold, placeholders for class names, one count of
images from upload to result, the taught model "under the hood" (per-class accuracy, confusion
matrix, curves), a live camera preview, and a clean fallback when the camera is refused.

Skipped, with the reason, where Chromium or selenium is missing (as tests/test_serve_browser.py).
"""

from __future__ import annotations

import os

import pytest
from conftest import make_class_folder
from serve_server import Server, shape_folder, shape_image
from test_serve_browser import CHROMIUM, DRIVER, FAKE_CAMERA, chromium, labels_shown, wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM) or not os.path.exists(DRIVER),
                       reason="needs Debian chromium + chromium-driver: apt-get install chromium chromium-driver"),
]

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    """A real two-class model whose threshold is 0.30 (as tuning on a large validation split would set it)."""
    from headstart import ImageClassifier

    root = tmp_path_factory.mktemp("binary")
    data = make_class_folder(root / "data", classes=("ants", "bees"), n=8, size=(48, 48))
    clf = ImageClassifier(val_fraction=0.25, test_fraction=0.0).fit(data)
    clf.task_.threshold, clf.task_.threshold_reason = 0.3, "tuned on 1200 validation images"
    return clf.save(root / "bees-model"), data


@pytest.fixture(scope="module")
def server(binary_model, tmp_path_factory):
    model, _ = binary_model
    with Server([model, "--work-dir", tmp_path_factory.mktemp("teach-work")]) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def open_page(driver, server):
    driver.get(server.url + "/")
    wait(driver).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "ants, bees"))


def test_each_prediction_names_its_model_and_the_threshold_is_shown(browser, server, binary_model):
    _, data = binary_model
    open_page(browser, server)
    threshold = browser.find_element(By.ID, "model-threshold").text
    assert "bees when p(bees) ≥ 0.30" in threshold and "tuned on 1200 validation images" in threshold
    assert "bees-model" in browser.find_element(By.ID, "model-about").text
    browser.find_element(By.ID, "file-input").send_keys(str(sorted((data / "bees").glob("*.png"))[0]))
    wait(browser).until(lambda d: labels_shown(d))
    card = browser.find_element(By.CSS_SELECTOR, "#results .card")
    by = card.find_element(By.CSS_SELECTOR, ".by").text
    assert by.startswith("by bees-model · efficientnet_lite0 · trained "), by
    note = card.find_element(By.CSS_SELECTOR, ".note").text
    label = labels_shown(browser)[0]
    assert note.startswith("p(bees) ") and note.endswith("threshold 0.30")
    assert ("≥" in note) == (label == "bees")  # the label follows the threshold the note states


def test_teach_with_placeholders_then_see_the_model_under_the_hood(browser, server, tmp_path):
    folder = shape_folder(tmp_path / "shapes", n=4)
    open_page(browser, server)
    browser.find_element(By.ID, "tab-teach").click()
    first, second = browser.find_elements(By.CSS_SELECTOR, ".class-card")
    names = [c.find_element(By.CSS_SELECTOR, "input.name") for c in (first, second)]
    assert [n.get_attribute("value") for n in names] == ["", ""]
    assert [n.get_attribute("placeholder") for n in names] == ["Class 1", "Class 2"]
    names[0].send_keys("circles")  # typing gives the name, not "Class 1circles"
    assert names[0].get_attribute("value") == "circles"
    for card, kind in zip((first, second), ("circles", "stripes")):  # the second keeps its placeholder
        card.find_element(By.CSS_SELECTOR, "input.files").send_keys(
            "\n".join(str(p) for p in sorted((folder / kind).glob("*.png"))))
    browser.find_element(By.ID, "train").click()
    seen = set()

    def finished(d):
        seen.add(d.find_element(By.ID, "teach-status").text)
        return d.find_element(By.ID, "job-done").is_displayed() or "failed" in d.find_element(
            By.ID, "teach-status").get_attribute("class")

    wait(browser, 600).until(finished)
    status = browser.find_element(By.ID, "teach-status").text
    assert status.startswith("Done: trained on 6 images and checked on 2"), status
    assert not any(" of " in s and "features" in s and not s.endswith(" of 8 images") for s in seen), seen

    rows = browser.execute_script("return Array.from(document.querySelectorAll('#per-class tbody tr'))"
                                  ".map(r => Array.from(r.cells).map(c => c.textContent))")
    assert [r[0] for r in rows] == ["Class 2", "circles"] and [r[2] for r in rows] == ["1", "1"]
    assert all(r[1].endswith("%") for r in rows)
    matrix = browser.execute_script("return Array.from(document.querySelectorAll('#confusion tr'))"
                                    ".slice(1).map(r => Array.from(r.cells).slice(1).map(c => +c.textContent))")
    assert len(matrix) == 2 and sum(map(sum, matrix)) == 2
    diagonal = matrix[0][0] + matrix[1][1]
    assert f"{50 * diagonal}%" in [rows[0][1], rows[1][1]] or diagonal in (0, 2)
    points = browser.execute_script("return Array.from(document.querySelectorAll('#curves figure'))"
                                    ".map(f => [f.dataset.key, f.querySelector('polyline').getAttribute('points')"
                                    ".split(' ').length])")
    assert [k for k, _ in points] == ["val_score", "loss", "val_loss"] and all(n >= 2 for _, n in points)

    browser.find_element(By.ID, "try-new").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "Class 2, circles"))
    browser.find_element(By.ID, "file-input").send_keys(str(shape_image(tmp_path / "c.png", "circles", 100)))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card:not(.pending) .by"))
    by = browser.find_element(By.CSS_SELECTOR, "#results .card .by").text
    assert by.startswith("by taught model ") and "efficientnet_lite0 · trained" in by


def test_live_camera_preview_predicts_frames(server):
    b = chromium(*FAKE_CAMERA)
    try:
        open_page(b, server)
        wait(b).until(EC.visibility_of_element_located((By.ID, "camera-try"))).click()
        wait(b).until(lambda d: d.execute_script("return document.querySelector('#video').videoWidth") > 0)
        b.find_element(By.ID, "live-toggle").click()
        wait(b).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#live .by")))
        assert b.find_element(By.CSS_SELECTOR, "#live .label").text.split("\n")[0].split()[0] in ("ants", "bees")
        assert b.find_element(By.CSS_SELECTOR, "#live .by").text.startswith("by bees-model")
        assert not b.find_elements(By.CSS_SELECTOR, "#results .card")  # live frames are not piled up as cards
        frames = "return window.performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/predict')).length"
        seen = b.execute_script(frames)
        wait(b).until(lambda d: d.execute_script(frames) >= seen + 2)  # still predicting, frame after frame
        assert len(b.find_elements(By.CSS_SELECTOR, "#live .bar")) == 2  # one bar per class, not one per frame
        b.find_element(By.CSS_SELECTOR, "#camera-panel .camera-stop").click()
        assert not b.find_element(By.ID, "live").is_displayed() and not b.find_element(By.ID, "camera-panel").is_displayed()
        assert b.execute_script("return state.live") is False
    finally:
        b.quit()


def test_a_refused_camera_leaves_a_working_page(server, binary_model):
    _, data = binary_model
    b = chromium("--use-fake-device-for-media-stream")  # a camera, but the permission is refused
    try:
        b.execute_cdp_cmd("Browser.setPermission", {"permission": {"name": "camera"}, "setting": "denied",
                                                   "origin": server.url})
        open_page(b, server)
        wait(b).until(EC.visibility_of_element_located((By.ID, "camera-try"))).click()
        wait(b).until(EC.visibility_of_element_located((By.ID, "notice")))
        assert "camera is not available (permission was refused)" in b.find_element(By.ID, "notice").text
        assert not b.find_element(By.ID, "camera-panel").is_displayed()
        b.find_element(By.ID, "file-input").send_keys(str(sorted((data / "ants").glob("*.png"))[0]))
        wait(b).until(lambda d: labels_shown(d))
        assert labels_shown(b)[0] in ("ants", "bees")
    finally:
        b.quit()
