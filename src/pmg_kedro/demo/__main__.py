"""`python -m pmg_kedro.demo [--env base] [--host 127.0.0.1] [--port 7860]` (`make demo`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .app import launch
from .service import DemoService


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pmg_kedro.demo", description=__doc__)
    parser.add_argument("--env", default="base", help="Kedro environment (models and data)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: 7860 or the next free)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="model requests admitted at once (their model work runs one at a time)",
    )
    parser.add_argument("--project-path", type=Path, default=Path.cwd(), help="the Kedro project")
    parser.add_argument("--queue-size", type=int, default=16, help="requests waiting at most")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    service = DemoService.from_env(args.env, args.project_path)
    app, url = launch(service, args.host, args.port, args.concurrency, args.queue_size)
    print(f"PMG demo ({args.env} environment) running at {url}  (Ctrl+C stops it)", flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()
