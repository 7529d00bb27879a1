"""The ``tal`` command line: a thin layer over the library.

Each verb lives in ``tal_pipeline/commands/<verb>.py`` and is registered here. Heavy imports
(torch, av, cv2) happen inside the verbs, so ``tal --help`` stays fast. Errors a user can act on
(:class:`~tal_pipeline.errors.TalError`), and file system errors (a full disk, a folder made
read-only during the run), print as one line on stderr; ``--verbose`` adds the traceback and
debug logs. Exit status: 0 all done, 1 something failed (an input, an output, the machine), 2
the command line is wrong, 130 Ctrl-C, 143 SIGTERM (``errors``). A verb's command-line error
(an unknown option, a bad value: ``commands/options.py`` checks them) is one line too.

Ctrl-C (SIGINT) and SIGTERM stop a verb at once: ``tal: interrupted`` (exit status 130) or
``tal: terminated`` (143), no traceback without ``-v``. Both unwind the stack as a
KeyboardInterrupt, so temp files and locks are cleaned up on the way out; the ``tal`` process
then ends without the interpreter's shutdown, which would wait for decode/flow worker threads
to finish their chunk (seconds; their thread pools run every queued task) or abort in them.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
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
    "convert": "convert",
}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: unwinds like Ctrl-C (cleanup runs)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


_signal_status: int | None = None  # set when a signal stopped the verb: the exit status


PIPELINE_VERBS = ("detect", "extract")  # the verbs that run decode, TV-L1 and the backbone


def openmp_passive() -> None:
    """OpenMP's idle threads sleep at once instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    Why: a pipeline process runs more threads than cores (the backbone's OpenMP team, TV-L1's
    workers, the decoder), and an OpenMP thread spinning while the backbone waits for its next
    chunk holds a core that TV-L1 would use: the wait policy changed nothing but the CPU spent
    (BENCHMARKS.md, "Extraction"). The OpenMP runtime reads it once, when torch loads it, so it
    is set before torch is imported (no effect after); a value the user set wins.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _LazyGroup(click.Group):
    """Loads each verb's module only when that verb (or --help) needs it."""

    def list_commands(self, ctx):
        return list(VERBS)

    def get_command(self, ctx, name):
        if name not in VERBS:
            return None
        if name in PIPELINE_VERBS:
            openmp_passive()
        module = importlib.import_module(f"tal_pipeline.commands.{VERBS[name]}")
        return module.command

    def __call__(self, *args, **kwargs):
        """``tal`` as a process (CliRunner calls ``main`` instead): after a signal, the stack is
        unwound and the message printed; end now, skipping the interpreter's shutdown."""
        global _signal_status
        _signal_status = None
        try:
            return self.main(*args, **kwargs)
        finally:
            if _signal_status is not None:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(_signal_status)

    def invoke(self, ctx):
        global _signal_status
        installed = threading.current_thread() is threading.main_thread()
        if installed:
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            # a verb's command line (a bad option value: its type or callback, commands/options.py;
            # an unknown option; a missing argument): one line like every error, exit status 2
            hint = f"; see tal {err.ctx.info_name} --help" if err.ctx is not None and err.ctx.parent else ""
            click.echo(f"tal: error: {err.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(err.exit_code)
        except TalError as err:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            # exit status 0 (NothingToDo, e.g. an empty --shard): a note, not an error
            click.echo(f"tal: {'error: ' if err.exit_code else ''}{err}", err=True)
            sys.exit(err.exit_code)
        except RecursionError:  # a reader without a depth check of its own (errors.loads_json)
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo("tal: error: an input is nested too deeply to read (JSON arrays or objects "
                       "inside each other thousands of levels deep)", err=True)
            sys.exit(1)
        except OSError as err:  # a folder made read-only or a disk filled while running
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            from tal_pipeline.fsutil import os_error_text

            click.echo(f"tal: error: {os_error_text(err)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as err:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            terminated = isinstance(err, Terminated)
            click.echo("tal: terminated" if terminated else "tal: interrupted", err=True)
            _signal_status = 143 if terminated else 130
            sys.exit(_signal_status)
        finally:
            if installed:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
