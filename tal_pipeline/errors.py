"""Exceptions that reach users as one line (``tal: error: <message>``)."""


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
    """Bad user input: a malformed file, a wrong option, a schema error."""


class NotAvailableError(TalError):
    """A stage or optional feature is not available in this install."""

    exit_code = 2
