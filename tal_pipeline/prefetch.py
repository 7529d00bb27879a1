"""A generator run ahead on a background thread (decode and flow overlap the backbone)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

_DONE = object()


def prefetch(gen: Iterator, depth: int = 2) -> Iterator:
    """Run ``gen`` on a background thread, ``depth`` items ahead; errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in gen:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            put((_DONE, err))
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="tal-extract-prefetch", daemon=True)
    thread.start()
    interrupted = False
    try:
        while True:
            item, err = q.get()  # a signal (Ctrl-C) interrupts the wait
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        stop.set()  # the worker stops at its next put
        if not interrupted:  # Ctrl-C: no wait for the decode/flow step in progress (daemon)
            thread.join(timeout=5.0)
