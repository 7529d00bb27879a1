"""`tal report`: not built yet."""

import click

from tal_pipeline.errors import NotAvailableError


@click.command("report", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """(not available yet in this version)"""
    raise NotAvailableError("'tal report' is not available yet in this version")
