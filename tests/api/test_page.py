"""The page at / in headless Chromium: pick a demo image and two methods and the overlays
appear with the class ExplainerService predicts; Maximize streams frames and stops on request;
Embed plots every image; no console errors; nothing overflows a narrow window."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
from explainserve.api.http_demo import demo_images
from explainserve.models.demo.repository import demo_model_config
from explainserve_client import Client
from support import running_server

pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

METHODS = ("gradcam", "saliency")


def _chromium() -> tuple[str, str]:
    """Chromium and its driver from Debian's packages, installed here when missing and we
    may (root); otherwise the test is skipped, saying why."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and cannot be (needs root and apt-get: "
                    "apt-get install -y chromium chromium-driver)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            pytest.skip(f"could not install Chromium ({' '.join(command)}): {result.stderr[-500:]}")
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page():
    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with running_server((demo_model_config(),), http_port=0) as background:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            driver.get(f"http://127.0.0.1:{background.server.http_port}/")
            WebDriverWait(driver, 30).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
            yield driver, background
        finally:
            driver.quit()


def _severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_explain_two_methods_on_a_demo_image(page, tmp_path):
    driver, background = page
    driver.find_element(By.CSS_SELECTOR, "button[data-demo=star]").click()
    for box in driver.find_elements(By.CSS_SELECTOR, "input[name=method]"):
        if (box.get_attribute("value") in METHODS) != box.is_selected():
            box.click()
    driver.find_element(By.ID, "explain").click()
    WebDriverWait(driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == len(METHODS))
    star = next(d for d in demo_images() if d["name"] == "star")
    with Client(background.address, timeout=60) as client:
        expected = client.explain(base64.b64decode(star["png"]), model="demo", method="gradcam")[0]
    shown = {f.get_attribute("data-method"): f.find_element(By.CSS_SELECTOR, ".predicted")
             for f in driver.find_elements(By.CSS_SELECTOR, "figure.result")}
    assert set(shown) == set(METHODS)
    for caption in shown.values():
        assert caption.get_attribute("data-label") == expected.label
        assert f"(class {expected.target})" in caption.text
    images = driver.find_elements(By.CSS_SELECTOR, "figure.result img")
    assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    driver.save_screenshot(str(tmp_path / "explain.png"))
    assert not _severe(driver)


def test_maximize_streams_frames_and_stops(page, tmp_path):
    driver, _ = page
    driver.find_element(By.ID, "tab-maximize").click()
    steps = driver.find_element(By.ID, "max-steps")
    steps.clear()
    steps.send_keys("1000")
    every = driver.find_element(By.ID, "max-every")
    every.clear()
    every.send_keys("4")
    driver.find_element(By.ID, "max-start").click()
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: int(d.find_element(By.ID, "max-frame").get_attribute("data-step") or 0) >= 4)
    driver.find_element(By.ID, "max-stop").click()
    wait.until(lambda d: d.find_element(By.ID, "max-status").text == "Stopped.")
    stopped_at = int(driver.find_element(By.ID, "max-frame").get_attribute("data-step"))
    assert stopped_at < 1000
    driver.save_screenshot(str(tmp_path / "maximize.png"))
    assert not _severe(driver)


def test_embed_plots_every_demo_image(page, tmp_path):
    driver, _ = page
    driver.find_element(By.ID, "tab-embed").click()
    driver.find_element(By.ID, "embed-run").click()
    WebDriverWait(driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#embed-plot circle")) == len(demo_images()))
    driver.save_screenshot(str(tmp_path / "embed.png"))
    assert not _severe(driver)


def test_a_narrow_window_does_not_overflow(page, tmp_path):
    driver, _ = page
    driver.set_window_size(360, 800)
    driver.find_element(By.ID, "tab-explain").click()
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    driver.save_screenshot(str(tmp_path / "narrow.png"))
    assert overflow <= 0
    labelled = driver.execute_script(
        "return [...document.querySelectorAll('input, select')].every("
        "e => e.labels.length > 0 || e.getAttribute('aria-label'))")
    assert labelled
