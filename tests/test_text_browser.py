"""The page's text box in headless Chromium against a real ``headstart serve`` of a tiny text model:
type sentences, press Classify, see the labels the model gives. Skipped, with the reason, where
Chromium or selenium is missing (as tests/test_serve_browser.py)."""

from __future__ import annotations

import pytest
from conftest import write_csv
from serve_server import Server
from test_serve_browser import CHROMIUM, DRIVER, chromium, pytestmark, wait  # noqa: F401 - the same skips
from test_text import SMALL, sentiment_rows

from headstart.estimator.text import TextClassifier


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-page")
    clf = TextClassifier(**SMALL).fit(write_csv(root / "reviews.csv", ["text", "label"], sentiment_rows(240)))
    with Server([clf.save(root / "model")], log=root / "server.log") as srv:
        yield srv, clf


def test_type_sentences_in_the_text_box_and_see_their_labels(text_server):
    from selenium.webdriver.common.by import By  # after the skips above: selenium may be missing
    from selenium.webdriver.support import expected_conditions as EC

    srv, clf = text_server
    texts = ["film 3 was superb and long .", "film 8 was terrible and short ."]
    expected = clf.predict(texts)
    assert sorted(expected) == ["negative", "positive"]        # the two sentences get different labels
    driver = chromium()
    try:
        driver.get(srv.url + "/")
        wait(driver).until(EC.visibility_of_element_located((By.ID, "text-input")))
        assert "negative, positive" in driver.find_element(By.CSS_SELECTOR, "#text-try p").text
        driver.find_element(By.ID, "text-input").send_keys("\n".join(texts))
        driver.find_element(By.ID, "text-predict").click()
        wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#text-results p")) == 2)
        shown = [p.get_attribute("textContent") for p in driver.find_elements(By.CSS_SELECTOR, "#text-results p")]
        for text, label, line in zip(texts, expected, shown):
            assert line.startswith(f"{text}  ->  {label} ("), shown
        driver.find_element(By.ID, "text-input").clear()
        driver.find_element(By.ID, "text-input").send_keys("   ")
        driver.find_element(By.ID, "text-predict").click()            # nothing to classify: nothing shown
        assert driver.find_elements(By.CSS_SELECTOR, "#text-results p") == []
    finally:
        driver.quit()
