"""The demo over the `test` environment's last run: one service (models loaded once) and one
server for the module tests that need HTTP or a browser."""

import pytest


@pytest.fixture(scope="session")
def demo_service(test_env_default_run, project_root):
    from pmg_kedro.demo.service import DemoService

    return DemoService.from_env("test", project_root)


@pytest.fixture(scope="session")
def demo_url(demo_service):
    """The page and the API on 127.0.0.1, a free port, as `make demo` serves them."""
    from pmg_kedro.demo.app import launch

    app, url = launch(demo_service, "127.0.0.1", None, concurrency=2, queue_size=16)
    yield url
    app.close()
