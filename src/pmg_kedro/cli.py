"""The project's `kedro` commands. Kedro reads the click group `cli` of this module, and its
commands replace Kedro's own of the same name (Kedro's < plugins' < this module's).

`kedro run` is Kedro's run command, except that an expected error (a configuration that cannot
run, bad scene data, a bad parameter block, a pipeline the environment does not run) prints its
message and exits with status 1 instead of printing Kedro's full traceback; `kedro run --verbose`
or PMG_TRACEBACK=1 shows the traceback as before.

Another command group (`kedro pmg ...`): write it in its own module, then add it below with
`cli.add_command(group)`; `with_brief_errors(command)` gives any command the same short errors.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import CONTEXT_SETTINGS

TRACEBACK_ENV_VAR = "PMG_TRACEBACK"


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says all a user needs (imported when one happens: no start-up cost)."""
    from .components.data.defects import IngestionError
    from .components.models.params import ParameterError
    from .pipelines.model_preparation.nodes import ModelPreparationDisabled
    from .preflight import PreflightError

    return (PreflightError, IngestionError, ParameterError, ModelPreparationDisabled)


def expected_cause(error: BaseException | None) -> BaseException | None:
    """The expected error that `error` is or comes from (Kedro wraps a dataset's), else None."""
    expected, seen = expected_errors(), set()
    while error is not None and id(error) not in seen:
        if isinstance(error, expected):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _wants_traceback(verbose: bool) -> bool:
    return verbose or os.environ.get(TRACEBACK_ENV_VAR, "") not in ("", "0")


def with_brief_errors(command: click.Command) -> click.Command:
    """`command` plus a `--verbose` flag; without it an expected error prints its message (no
    traceback) and exits with status 1. Any other error keeps its traceback."""

    @functools.wraps(command.callback)
    def callback(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        try:
            return command.callback(*args, **kwargs)
        except Exception as error:
            expected = expected_cause(error)
            if expected is None or _wants_traceback(verbose):
                raise
            click.secho(f"Error: {expected}", fg="red", err=True)
            click.echo(f"(The traceback: add --verbose, or set {TRACEBACK_ENV_VAR}=1.)", err=True)
            raise SystemExit(1) from None

    verbose = click.Option(
        ["--verbose", "-v"], is_flag=True, help="Show the full traceback of an expected error."
    )
    return click.Command(
        name=command.name,
        callback=callback,
        params=[*command.params, verbose],
        help=command.help,
        short_help=command.short_help,
        context_settings=command.context_settings,
    )


@click.group(context_settings=CONTEXT_SETTINGS, name=__file__)
def cli() -> None:
    """Project commands (they replace Kedro's commands of the same name)."""


cli.add_command(with_brief_errors(kedro_run))

# `kedro pmg add-scene NAME --from DIR`: a scene from a folder of files (scene_cli.py).
from .scene_cli import pmg  # noqa: E402

cli.add_command(pmg)
