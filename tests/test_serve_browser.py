"""The page at ``/`` driven in headless Chromium (Debian ``chromium`` + ``chromium-driver``, via
selenium): upload an image and see its label; teach two classes and see the new model predict;
with Chromium's fake camera (a moving test pattern), predict a snapshot and add snapshots to a
class.

Skipped, with the reason, where /usr/bin/chromium or selenium is missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil

import pytest
from serve_server import Server, shape_folder, shape_image

CHROMIUM = "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM) or not os.path.exists(DRIVER),
                       reason="needs Debian chromium + chromium-driver: apt-get install chromium chromium-driver"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1200,900")
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")  # no permission prompt


def chromium(*extra: str):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + extra:
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def camera_browser():
    driver = chromium(*FAKE_CAMERA)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    model, _ = trained_model
    with Server([model, "--work-dir", tmp_path_factory.mktemp("teach-work")]) as srv:
        yield srv


def wait(driver, seconds=60):
    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def labels_shown(driver) -> list[str]:
    # Cards are newest first; the label's first text node is the label (then the percentage).
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results .card:not(.pending) .label'))"
        ".map(e => e.firstChild ? e.firstChild.textContent : '')")


def test_upload_an_image_and_see_its_label(browser, server, trained_model):
    _, data = trained_model
    browser.get(server.url + "/")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "cat, dog, fish"))
    browser.find_element(By.ID, "file-input").send_keys(str(data / "dog" / "dog_002.png"))
    wait(browser).until(lambda d: labels_shown(d))
    assert labels_shown(browser) == ["dog"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#results .card .bar")
    assert len(bars) == 3  # top-3 probability bars


def test_show_the_heat_map_of_a_tried_image(browser, server, trained_model):
    _, data = trained_model
    browser.get(server.url + "/")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "cat, dog, fish"))
    browser.find_element(By.ID, "file-input").send_keys(str(data / "cat" / "cat_001.png"))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card button.heat"))
    browser.find_element(By.CSS_SELECTOR, "#results .card button.heat").click()
    shown = "const i = document.querySelector('#results .card img.heat'); return i ? i.naturalWidth : 0"
    wait(browser).until(lambda d: d.execute_script(shown) > 0)
    assert browser.execute_script(shown) > 2 * 224  # the input, then the prediction's heat map
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .card button.heat")


def test_teach_two_classes_then_try_the_new_model(browser, server, tmp_path):
    folder = shape_folder(tmp_path / "shapes", n=4)
    browser.get(server.url + "/")
    browser.find_element(By.ID, "tab-teach").click()
    cards = browser.find_elements(By.CSS_SELECTOR, ".class-card")
    assert len(cards) == 2  # the page starts with two empty classes
    for card, kind in zip(cards, ("circles", "stripes")):
        name = card.find_element(By.CSS_SELECTOR, "input.name")
        name.clear()
        name.send_keys(kind)
        paths = sorted((folder / kind).glob("*.png"))
        card.find_element(By.CSS_SELECTOR, "input.files").send_keys("\n".join(str(p) for p in paths))
        assert card.find_element(By.CSS_SELECTOR, ".count").text == "4 images"
    browser.find_element(By.ID, "train").click()
    wait(browser, 600).until(lambda d: d.find_element(By.ID, "job-done").is_displayed()
                             or "failed" in d.find_element(By.ID, "teach-status").get_attribute("class"))
    status = browser.find_element(By.ID, "teach-status").text
    assert status.startswith("Done"), status
    assert browser.find_element(By.ID, "download").is_displayed()

    browser.find_element(By.ID, "try-new").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "circles, stripes"))
    fresh = [shape_image(tmp_path / f"new/{k}.png", k, 100) for k in ("stripes", "circles")]
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in fresh))
    wait(browser).until(lambda d: len(labels_shown(d)) == 2)
    assert sorted(labels_shown(browser)) == ["circles", "stripes"]
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('#results .card')).map(c => "
        "[c.querySelector('.file').textContent, c.querySelector('.label').firstChild.textContent])")
    assert {n: lab for n, lab in names} == {"stripes.png": "stripes", "circles.png": "circles"}


def test_no_camera_button_without_a_camera(browser, server):
    browser.get(server.url + "/")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "cat"))
    has_camera = browser.execute_script(
        "return (await navigator.mediaDevices.enumerateDevices()).some(d => d.kind === 'videoinput')")
    if has_camera:
        pytest.skip("this machine has a camera")
    assert not browser.find_element(By.ID, "camera-try").is_displayed()


def test_camera_snapshot_is_predicted(camera_browser, server):
    b = camera_browser
    b.get(server.url + "/")
    wait(b).until(EC.text_to_be_present_in_element((By.ID, "model-labels"), "cat, dog, fish"))
    wait(b).until(EC.visibility_of_element_located((By.ID, "camera-try"))).click()
    wait(b).until(lambda d: d.execute_script("return document.querySelector('#video').videoWidth") > 0)
    b.find_element(By.ID, "capture").click()
    wait(b).until(lambda d: labels_shown(d))
    (label,) = labels_shown(b)
    assert label in ("cat", "dog", "fish")
    card = b.find_element(By.CSS_SELECTOR, "#results .card")
    assert card.find_element(By.CSS_SELECTOR, ".file").text.startswith("camera")
    assert len(card.find_elements(By.CSS_SELECTOR, ".bar")) == 3
    assert b.execute_script("return document.querySelector('#results .card img').naturalWidth") > 0
    b.find_element(By.CSS_SELECTOR, "#camera-panel .camera-stop").click()
    assert not b.find_element(By.ID, "camera-panel").is_displayed()


def test_camera_snapshots_become_teach_examples(camera_browser, server):
    b = camera_browser
    b.get(server.url + "/")
    b.find_element(By.ID, "tab-teach").click()
    wait(b).until(EC.visibility_of_element_located((By.ID, "camera-teach"))).click()
    first, second = b.find_elements(By.CSS_SELECTOR, ".class-card")
    wait(b).until(lambda d: first.find_element(By.CSS_SELECTOR, ".snap").is_displayed())
    for _ in range(2):
        first.find_element(By.CSS_SELECTOR, ".snap").click()
    second.find_element(By.CSS_SELECTOR, ".snap").click()
    wait(b).until(lambda d: first.find_element(By.CSS_SELECTOR, ".count").text == "2 images")
    wait(b).until(lambda d: second.find_element(By.CSS_SELECTOR, ".count").text == "1 image")
    assert len(first.find_elements(By.CSS_SELECTOR, ".thumbs img")) == 2


@pytest.mark.parametrize("path, rendered", [("/docs", ".swagger-ui .info .title"), ("/redoc", "[role=search], .api-info h1")])
def test_the_api_docs_render_from_the_installed_package_not_a_cdn(browser, server, path, rendered):
    browser.get(server.url + path)
    wait(browser).until(lambda d: d.execute_script(f"return document.querySelector({rendered!r}) !== null"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource')"
                                    ".map(e => [e.name, e.responseStatus, e.transferSize])")
    fetched = [url for url, status, size in loaded if status or size]  # a request the page's policy blocked never left
    assert fetched and all(url.startswith(server.url) for url in fetched), loaded
    assert path == "/docs" and len(fetched) == len(loaded) or "Content-Security-Policy" in browser.page_source
