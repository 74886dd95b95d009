"""A person in a browser (issue 18): headless Chromium (Debian's package, driven by Selenium).

Through the tunnel site.yml prints, the dashboard asks for the token; once it is entered, its Cluster page
lists every node ALIVE. JupyterLab with its token shows the rayops kernel and the workflow notebook. A failing
check leaves a screenshot and the page's text in .rayops/test-artifacts/. ~20 s on the session cluster
(Chromium's start included)."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_helpers import RayCluster, wait_for_text

pytestmark = [pytest.mark.localcloud, pytest.mark.slow]


def test_dashboard_asks_for_the_token_then_lists_every_node_alive(
    ray_cluster: RayCluster, tunnel: dict[str, int], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    token = ray_cluster.secret("ray_auth_token")
    base = f"http://127.0.0.1:{tunnel['dashboard']}"
    browser.get(base + "/")
    box = '[placeholder="Enter your authentication token"]'
    prompt = lambda _: browser.find_elements(By.CSS_SELECTOR, box)  # noqa: E731
    wait_for_text(browser, "dashboard-token-prompt", prompt, 60)
    browser.find_element(By.CSS_SELECTOR, box).send_keys(token)
    next(
        b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == "SUBMIT"
    ).click()
    browser.get(base + "/#/cluster")
    ips = [m.ip for m in ray_cluster.cloud.spec.machines()]
    took = wait_for_text(
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
    took = wait_for_text(
        browser,
        "jupyterlab-launcher",
        lambda text: "Python (rayops cluster)" in text and "workflow.ipynb" in text,
        120,
    )
    print(f"JupyterLab: launcher with the rayops kernel and workflow.ipynb after {took:.1f} s")
