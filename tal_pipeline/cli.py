"""The ``tal`` command line: a thin layer over the library.

Each verb lives in ``tal_pipeline/commands/<verb>.py`` and is registered here. Heavy imports
(torch, av, cv2) happen inside the verbs, so ``tal --help`` stays fast. Errors a user can act on
(:class:`~tal_pipeline.errors.TalError`) print as one line on stderr; ``--verbose`` adds the
traceback and debug logs.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from tal_pipeline._version import __version__
from tal_pipeline.errors import TalError

# verb -> module in tal_pipeline.commands that defines a click command named `command`
VERBS = {
    "detect": "detect",
    "extract": "extract",
    "train": "train",
    "eval": "eval_",
    "plot": "plot",
    "report": "report",
}


class _LazyGroup(click.Group):
    """Loads each verb's module only when that verb (or --help) needs it."""

    def list_commands(self, ctx):
        return list(VERBS)

    def get_command(self, ctx, name):
        if name not in VERBS:
            return None
        module = importlib.import_module(f"tal_pipeline.commands.{VERBS[name]}")
        return module.command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TalError as err:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"tal: error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("tal: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tal")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and full tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """tal-pipeline: raw video to temporal action detections."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
