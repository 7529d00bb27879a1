"""`tal extract`: not built yet."""

import click

from tal_pipeline.errors import NotAvailableError


@click.command("extract", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """(not available yet in this version)"""
    raise NotAvailableError("'tal extract' is not available yet in this version")
