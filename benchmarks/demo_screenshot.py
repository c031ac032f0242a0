"""The docs' screenshot of the demo (`make docs-figures`): one evaluation user's response with
the whole trace, in headless Chromium (Debian's `chromium` and `chromium-driver`), as the browser
test drives it.

    .venv/bin/python benchmarks/demo_screenshot.py --env test --scene costume \
        --out docs/figures/demo_test_env.png

The demo is served in this process on 127.0.0.1; `--user` defaults to the scene's first
evaluation user. Needs the env's `kedro run` outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from local_env import prepare

ROOT = prepare(GRADIO_ANALYTICS_ENABLED="False")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--scene", default="costume")
    parser.add_argument("--user", default=None)
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=2600)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from pmg_kedro.demo.app import launch
    from pmg_kedro.demo.service import DemoService

    service = DemoService.from_env(args.env, ROOT)
    user = args.user or service.scenes[args.scene].evaluation_users()[0]
    app, url = launch(service)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={args.width},{args.height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        wait = WebDriverWait(driver, 300)
        driver.get(url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#user-view .pmg-cards")))
        for dropdown, option in (("scene", args.scene), ("user", user)):
            driver.find_element(By.CSS_SELECTOR, f"#{dropdown} input").click()
            wait.until(
                ec.element_to_be_clickable(
                    (By.CSS_SELECTOR, f"li[role=option][aria-label='{option}']")
                )
            ).click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#user-view"), user))
        driver.find_element(By.CSS_SELECTOR, "#run-user").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#trace img.pmg-chosen")))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"{args.out}: {args.env} environment, scene {args.scene}, user {user}")
    finally:
        driver.quit()
        app.close()


if __name__ == "__main__":
    main()
