"""The viewer page in a real, headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium).

One browser for the module. Screenshots go to ``test-artifacts/viewer/`` (ignored by git) for a look.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.viewer.conftest import ViewerRun
from wsipipe.slide import open_slide

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = "the browser tests need Debian's chromium and chromium-driver (see .ci/run)"
    assert CHROMIUM, missing
    assert CHROMEDRIVER, missing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,800")
    options.add_argument("--force-device-scale-factor=1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def settle(driver: Any, timeout: float = 20.0) -> None:
    """Wait until the page has loaded its slide and drawn every tile of the view."""
    deadline = time.monotonic() + timeout
    script = (
        "const a = window.wsipipeViewer; return !!a && a.ready && a.viewport.slide !== null "
        "&& a.viewport.pending === 0 && a.viewport.frame === 0;"
    )
    while time.monotonic() < deadline:
        if driver.execute_script(script):
            time.sleep(0.05)
            if driver.execute_script(script):
                return
        time.sleep(0.05)
    raise AssertionError(
        f"the viewer did not settle in {timeout} s: {driver.execute_script('return document.body.innerText')}"
    )


def open_view(driver: Any, run: ViewerRun, hash_text: str) -> None:
    driver.get("about:blank")
    driver.get(f"{run.url}/#{hash_text}")
    settle(driver)


def canvas_pixels(driver: Any, name: str) -> np.ndarray:
    """The view canvas as (h, w, 3) uint8 from a screenshot, also saved as an artefact."""
    png = driver.get_screenshot_as_png()
    (ARTIFACTS / f"{name}.png").write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    r = driver.execute_script(
        "const r = document.getElementById('view').getBoundingClientRect(); return [r.left, r.top, r.width, r.height];"
    )
    x, y, w, h = (round(v) for v in r)
    return shot[y : y + h, x : x + w]


def state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(
        "const a = window.wsipipeViewer, v = a.viewport;"
        "return {x: v.x, y: v.y, ds: v.ds, w: v.width, h: v.height, layers: [...a.layers].sort(), hash: location.hash};"
    )


def test_page_loads_without_console_errors(browser: Any, viewer_run: ViewerRun) -> None:
    open_view(browser, viewer_run, "layers=tissue,heatmap,detections,gt,explain")
    canvas_pixels(browser, "overview")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert browser.find_element("css selector", "#slides tr.current").text.startswith("test_001")
    assert (
        "µm" in browser.find_element("id", "scalebar-text").text
        or "mm" in browser.find_element("id", "scalebar-text").text
    )


def _at_scale_one(driver: Any, run: ViewerRun, x0: int, y0: int, layers: str) -> tuple[np.ndarray, int, int]:
    """Show level 0 at 1 screen px per slide px so that canvas pixel (i, j) shows slide pixel (x0 + i, y0 + j)."""
    open_view(driver, run, f"x=2048&y=1536&ds=1&layers={layers}")
    w, h = state(driver)["w"], state(driver)["h"]
    # centre x with W/2 - x an integer: canvas px s shows slide px s + x - W/2
    cx, cy = x0 + w / 2, y0 + h / 2
    open_view(driver, run, f"x={cx}&y={cy}&ds=1&layers={layers}")
    return canvas_pixels(driver, f"level0_{layers or 'none'}"), w, h


def test_a_tile_shows_the_slide_pixels_at_that_level_and_place(browser: Any, viewer_run: ViewerRun) -> None:
    x0, y0 = 1500, 1100  # level-0 px at the canvas's top-left corner; tiles start at multiples of 256
    pixels, w, h = _at_scale_one(browser, viewer_run, x0, y0, "")
    with open_slide(viewer_run.slide) as slide:
        expected = slide.read_region((x0, y0), 0, (w, h))
    assert pixels.shape == expected.shape
    # leave out the minimap (top right) and the scale bar and status line (bottom)
    pixels, expected = pixels[: h - 60, : w - 230].astype(int), expected[: h - 60, : w - 230].astype(int)
    diff = np.abs(pixels - expected)
    assert diff.mean() < 3  # JPEG quality 85, drawn 1:1
    shifted = np.abs(pixels[:, 2:] - expected[:, :-2]).mean()
    assert shifted > 2 * diff.mean()  # the place is right, not off by two pixels


def test_heatmap_changes_the_pixels_and_switching_it_off_restores_them(browser: Any, viewer_run: ViewerRun) -> None:
    open_view(browser, viewer_run, "layers=")
    before = canvas_pixels(browser, "heatmap_off")
    browser.find_element("css selector", "[data-layer=heatmap]").click()
    settle(browser)
    on = canvas_pixels(browser, "heatmap_on")
    assert "heatmap" in state(browser)["layers"]
    assert (np.abs(on.astype(int) - before).sum(axis=2) > 30).mean() > 0.05
    browser.find_element("css selector", "[data-layer=heatmap]").click()
    settle(browser)
    after = canvas_pixels(browser, "heatmap_off_again")
    assert np.array_equal(after, before)


def test_clicking_a_detection_pans_there(browser: Any, viewer_run: ViewerRun) -> None:
    open_view(browser, viewer_run, "layers=detections")
    items = browser.find_elements("css selector", "#detections li")
    assert len(items) >= 2
    target = browser.execute_script("return window.wsipipeViewer.slide.detections[1];")
    items[1].click()
    settle(browser)
    s = state(browser)
    assert (s["x"], s["y"]) == (target["x"], target["y"])
    assert f"x={target['x']}.0" in s["hash"]
    assert f"y={target['y']}.0" in s["hash"]
    canvas_pixels(browser, "detection_2")


def test_the_url_round_trips_the_view(browser: Any, viewer_run: ViewerRun) -> None:
    view = "slide=test_001&x=1234.5&y=987.0&ds=2.5&layers=heatmap,gt&opacity=0.8&threshold=0.4"
    open_view(browser, viewer_run, view)
    s = state(browser)
    assert (s["x"], s["y"], s["ds"], s["layers"]) == (1234.5, 987.0, 2.5, ["gt", "heatmap"])
    # pan with the keyboard: the new view lands in the URL, and that URL reopens it
    browser.find_element("id", "view").send_keys("\ue014")  # arrow right
    time.sleep(0.4)
    moved = state(browser)
    assert moved["x"] > s["x"]
    assert f"x={moved['x']:.1f}" in moved["hash"]
    open_view(browser, viewer_run, moved["hash"].lstrip("#"))
    again = state(browser)
    assert (again["x"], again["y"], again["ds"], again["layers"]) == (
        pytest.approx(moved["x"], abs=0.05),
        pytest.approx(moved["y"], abs=0.05),
        moved["ds"],
        moved["layers"],
    )
    assert browser.find_element("id", "opacity").get_attribute("value") == "0.8"
    assert browser.find_element("id", "threshold").get_attribute("value") == "0.4"
