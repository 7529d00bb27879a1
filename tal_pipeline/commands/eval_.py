"""`tal eval`: not built yet."""

import click

from tal_pipeline.errors import NotAvailableError


@click.command("eval", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """(not available yet in this version)"""
    raise NotAvailableError("'tal eval' is not available yet in this version")
