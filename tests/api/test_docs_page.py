"""/docs in a real headless browser (Debian's chromium): it renders with no request leaving this
machine, and "Try it out" submits the seed's example to a running API and shows the 202.

A call-center server often has no internet access: FastAPI's default page loads Swagger UI from a
public CDN and stays blank there. The browser here resolves no outside name at all, and every
request it makes (from Chrome's own network log, failed ones included) must be to the API.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from testkit.services import Live, live_services
from tests.api.conftest import SEED_REQUEST
from tests.conftest import claim_redis_database

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Generous: two cores shared with other test runs, and Swagger UI's bundle is 1.4 MB of script.
WAIT = 60
ARCHIVE_OPERATION = "operations-default-submit_vicidial_leads_archive_post"


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``leadarchive api`` in its own process, on a Redis database of its own (no worker: the
    job stays queued, and the database is flushed afterwards)."""
    with (
        claim_redis_database() as redis_url,
        live_services(
            database_url, redis_url, tmp_path_factory.mktemp("docs-logs"), worker=False
        ) as live,
    ):
        yield live


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(program), f"{program} is missing: scripts/bootstrap installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2400",
        f"--user-data-dir={tmp_path / 'profile'}",
        # No outside name resolves: a page that needs the internet fails here as it would on a
        # call-center server (the request is still in the network log, and fails the test).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # The driver is Debian's: Selenium Manager must not look for (or download) one.
    monkeypatch.setenv("SE_OFFLINE", "true")
    driver = webdriver.Chrome(
        options=options, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    )
    try:
        # Chrome's own start page is not the page under test: its requests are left out.
        driver.get("about:blank")
        driver.get_log("performance")
        yield driver
    finally:
        driver.quit()


def _requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the page has sent a request to so far, from Chrome's network log (a request
    its Content-Security-Policy blocked was never sent, and is left out)."""
    urls: dict[str, str] = {}
    blocked = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            blocked.add(params["requestId"])
    return [url for request, url in urls.items() if request not in blocked]


def _off_machine(urls: list[str], api: Live) -> list[str]:
    local = urlsplit(api.base_url).netloc
    return [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != local
    ]


def _click(driver: WebDriver, element: WebElement) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def test_docs_render_offline_and_try_it_out_submits_the_seed_example(
    api: Live, browser: WebDriver
) -> None:
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{api.base_url}/docs")
    operation = wait.until(ec.presence_of_element_located((By.ID, ARCHIVE_OPERATION)))
    rendered_urls = _requested_urls(browser)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )

    # Authorize with the key (the ApiKey scheme), then try the archive operation.
    _click(browser, browser.find_element(By.CSS_SELECTOR, "button.authorize"))
    key_input = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input"))
    )
    key_input.send_keys(f"Key={api.key}")
    _click(browser, browser.find_element(By.CSS_SELECTOR, ".auth-container button.authorize"))
    _click(browser, browser.find_element(By.CSS_SELECTOR, "button.btn-done"))
    _click(browser, operation.find_element(By.CSS_SELECTOR, ".opblock-summary"))
    _click(
        browser,
        wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, "button.try-out__btn")),
    )
    body = wait.until(
        lambda _: operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    )
    example = json.loads(body.get_attribute("value") or "null")
    _click(browser, operation.find_element(By.CSS_SELECTOR, "button.execute"))
    status = wait.until(
        lambda _: operation.find_element(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
        )
    )
    wait.until(lambda _: status.text.strip())
    answer = operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_description pre"
    ).text
    all_urls = rendered_urls + _requested_urls(browser)

    assert example == SEED_REQUEST
    assert status.text.strip() == "202", answer
    assert json.loads(answer)["status"] == "queued"
    assert any(u.endswith("/swagger-ui-bundle.js") for u in resources), resources
    assert any(u.endswith("/openapi.json") for u in all_urls), all_urls
    assert any(u.endswith("/vicidial/leads/archive") for u in all_urls), all_urls
    assert _off_machine(all_urls, api) == []
    assert _off_machine(resources, api) == []


def test_redoc_renders_offline(api: Live, browser: WebDriver) -> None:
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{api.base_url}/redoc")
    wait.until(
        lambda driver: "Submit leads to archive" in driver.find_element(By.TAG_NAME, "body").text
    )
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )

    assert any(u.endswith("/redoc.standalone.js") for u in resources), resources
    # Not the Resource Timing entries: they list the vendor's logo that the page's policy
    # stopped before it was sent (the network log says which requests were blocked).
    assert _off_machine(_requested_urls(browser), api) == []
