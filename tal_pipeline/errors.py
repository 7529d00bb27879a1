"""Exceptions that reach users as one line (``tal: error: <message>``).

Exit status (every verb): 0 all done; 1 an input, an output or the machine failed (a bad video,
a missing file, an output folder that cannot be written, CUDA asked for where there is none);
2 the command line itself is wrong (an unknown option, a missing argument, an option value that
is wrong on any machine: :class:`UsageError` and click's own); 130 Ctrl-C; 143 SIGTERM.

:func:`loads_json` is the JSON parser for files a user gives: nesting too deep for Python's
recursion is malformed JSON like any other (a ``ValueError``), never a ``RecursionError``.
"""

import json


class TalError(Exception):
    """Base class: an error the user can act on; the CLI prints ``str(err)`` on one line."""

    exit_code = 1


class VideoDecodeError(TalError):
    """A video could not be decoded: missing, not a video, no video stream, no frames, ..."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class VideoTooShortError(VideoDecodeError):
    """A video decoded fine but gives fewer frames than one feature step needs."""

    def __init__(self, path, num_frames: int, fps: float, step_frames: int):
        self.num_frames = num_frames
        self.step_frames = step_frames
        cause = (
            f"too short: {num_frames} frame{'s' if num_frames != 1 else ''} at {fps:g} fps "
            f"({num_frames / fps:.2f} s); one feature step needs {step_frames} frames "
            f"({step_frames / fps:.2f} s)"
        )
        super().__init__(path, cause)


class InputError(TalError):
    """Bad user input: a malformed or missing file, a schema error, an unusable output."""


class UsageError(TalError):
    """The command line itself is wrong: an option value that no machine accepts."""

    exit_code = 2


class StaleOutputError(InputError):
    """An existing output was made with other settings (``--overwrite`` redoes it)."""


class NothingToDo(TalError):
    """Not an error: the run has nothing to do and says why (an empty ``--shard``); exit 0."""

    exit_code = 0


class NotAvailableError(TalError):
    """A stage, a device or optional feature is not available on this machine or install."""


def loads_json(text: str | bytes):
    """``json.loads`` for text from a file a user gives. JSON nested deeper than Python's
    recursion limit (``[[[[...]]]]``, a few thousand levels) raises ``json.JSONDecodeError``
    (a ``ValueError``), which every reader already turns into one line naming the file."""
    try:
        return json.loads(text)
    except RecursionError:
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deeply to read (arrays or objects inside each "
                                   "other thousands of levels deep)", doc, 0) from None
