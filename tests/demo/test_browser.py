"""The demo as a person uses it, in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by `make setup`) driven by Selenium."""

import shutil

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from pmg_kedro.demo.requests import DemoRequest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"{missing} not found: `make setup` installs Debian's chromium and chromium-driver "
            "(as root: apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,2200",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _argmax_z(trace, alpha):
    floor = trace.settings.cosine_floor
    d_p = np.maximum(trace.selections["d_p"].to_numpy(), floor)
    d_t = np.maximum(trace.selections["d_t"].to_numpy(), floor)
    z = alpha * np.log(d_p) + (1 - alpha) * np.log(d_t)
    return trace.selections["image_key"].iloc[int(np.argmax(z))]


@pytest.fixture(scope="module")
def user_whose_choice_alpha_changes(demo_service):
    """(scene, user, trace, key at alpha 1, key at alpha 0): an evaluation user whose scores let
    the slider's ends choose different candidates (the page shows this same computation)."""
    for scene in ("emoticon", "costume", "movie"):
        for user in demo_service.scenes[scene].evaluation_users():
            trace = demo_service.respond(DemoRequest(scene, user_id=user))
            ends = _argmax_z(trace, 1.0), _argmax_z(trace, 0.0)
            if ends[0] != ends[1]:
                return scene, user, trace, *ends
    pytest.fail("no evaluation user of the test environment lets alpha change the choice")


def _pick(driver, wait, dropdown: str, option: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{dropdown} input").click()
    wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, f"li[role=option][aria-label='{option}']"))
    ).click()


def _chosen(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#trace #candidates tr.chosen").get_attribute(
        "data-key"
    )


def _set_alpha(driver, value: float) -> None:
    number = driver.find_element(By.CSS_SELECTOR, "#alpha input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys(str(value))
    number.send_keys(Keys.TAB)  # leaving the box releases the slider: re-selection


def test_a_person_asks_for_a_response_and_moves_the_alpha_slider(
    browser, demo_url, demo_service, user_whose_choice_alpha_changes, tmp_path
):
    scene, user, expected, key_at_1, key_at_0 = user_whose_choice_alpha_changes
    wait = WebDriverWait(browser, 300)  # a loaded 2-core machine: a response can take minutes
    browser.get(demo_url)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#user-view .pmg-cards")))
    _pick(browser, wait, "scene", scene)
    _pick(browser, wait, "user", user)
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#user-view"), f"User {user}"))

    browser.find_element(By.CSS_SELECTOR, "#run-user").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#trace img.pmg-chosen")))
    trace = browser.find_element(By.CSS_SELECTOR, "#trace")
    assert f"evaluation user {user}" in trace.text
    # the keywords and the candidates' table are shown, and equal the service's answer
    k_p = browser.find_element(By.CSS_SELECTOR, "#trace #k-p").text
    assert k_p == ", ".join(expected.preference_keywords["keywords"]) and k_p
    assert browser.find_element(By.CSS_SELECTOR, "#trace #k-t").text
    attributes = browser.find_elements(By.CSS_SELECTOR, "#trace #preference-keywords tr")
    assert len(attributes) == 1 + len(expected.preference_keywords["attributes"])
    rows = browser.find_elements(By.CSS_SELECTOR, "#trace #candidates tr[data-key]")
    assert len(rows) == len(demo_service.settings(scene).grid)
    assert _chosen(browser) == expected.chosen["image_key"]
    assert "Target-only baseline" in trace.text and "Time per stage" in trace.text

    # alpha re-selects among the same candidates: its ends choose differently for this user
    _set_alpha(browser, 1)
    wait.until(lambda d: _chosen(d) == key_at_1)
    _set_alpha(browser, 0)
    wait.until(lambda d: _chosen(d) == key_at_0)
    assert "(alpha 0)" in browser.find_element(By.CSS_SELECTOR, "#chosen-caption").text

    screenshot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_an_empty_composed_history_gets_a_message_in_the_page(browser, demo_url):
    wait = WebDriverWait(browser, 180)
    browser.get(demo_url)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#user-view .pmg-cards")))
    browser.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Compose')]").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#run-composed"))).click()
    wait.until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#demo-message"), "history is empty")
    )
