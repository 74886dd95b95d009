"""A person in a browser (issue 18): headless Chromium (Debian's package, driven by Selenium).

Through the tunnel site.yml prints, the dashboard asks for the token; once it is entered, its Cluster page
lists every node ALIVE. JupyterLab with its token shows the rayops kernel and the workflow notebook. A failing
check leaves a screenshot and the page's text in .rayops/test-artifacts/. ~20 s on the session cluster
(Chromium's start included)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import REPO, RayCluster

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]

ARTIFACTS = REPO / ".rayops" / "test-artifacts"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which("chromium") and Path(CHROMEDRIVER).exists(), (
        "the browser test needs Debian's chromium and chromium-driver: run `make setup` (as root)"
    )
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, name: str, condition: Any, timeout: float) -> float:
    """Wait until ``condition(page text)`` holds; on failure keep a screenshot and the text as artifacts."""
    from selenium.webdriver.common.by import By

    start = time.monotonic()
    text = ""
    while time.monotonic() - start < timeout:
        text = driver.find_element(By.TAG_NAME, "body").text
        if condition(text):
            return time.monotonic() - start
        time.sleep(0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.txt").write_text(text, encoding="utf-8")
    raise AssertionError(
        f"{name}: not shown within {timeout:.0f} s; see {ARTIFACTS}/{name}.png\n{text[-2000:]}"
    )


def test_dashboard_asks_for_the_token_then_lists_every_node_alive(
    ray_cluster: RayCluster, tunnel: dict[str, int], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    token = ray_cluster.secret("ray_auth_token")
    base = f"http://127.0.0.1:{tunnel['dashboard']}"
    browser.get(base + "/")
    box = '[placeholder="Enter your authentication token"]'
    _wait(browser, "dashboard-token-prompt", lambda _: browser.find_elements(By.CSS_SELECTOR, box), 60)
    browser.find_element(By.CSS_SELECTOR, box).send_keys(token)
    next(
        b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == "SUBMIT"
    ).click()
    browser.get(base + "/#/cluster")
    ips = [m.ip for m in ray_cluster.cloud.spec.machines()]
    took = _wait(
        browser,
        "dashboard-cluster",
        lambda text: all(ip in text for ip in ips) and f"ALIVE x {len(ips)}" in " ".join(text.split()),
        90,
    )
    print(f"dashboard: token entered, {len(ips)} nodes ALIVE on the Cluster page after {took:.1f} s")


def test_jupyterlab_shows_the_rayops_kernel_and_the_workflow_notebook(
    ray_cluster: RayCluster, tunnel: dict[str, int], browser: Any
) -> None:
    token = ray_cluster.secret("jupyter_token")
    browser.get(f"http://127.0.0.1:{tunnel['jupyterlab']}/lab?token={token}")
    took = _wait(
        browser,
        "jupyterlab-launcher",
        lambda text: "Python (rayops cluster)" in text and "workflow.ipynb" in text,
        120,
    )
    print(f"JupyterLab: launcher with the rayops kernel and workflow.ipynb after {took:.1f} s")
