"""Joining a Ray cluster for ``--ray``: a wrong address or token fails in seconds, in one line.

``ray.init`` alone retries an address for minutes, whatever listens there, and learns about a
token only from what the driver's machine happens to hold. So before it, for ``HOST:PORT``:

1. ``_speaks_grpc``: a Ray cluster's address is its GCS, a gRPC (HTTP/2) server. Send the HTTP/2
   greeting and wait a few seconds for the server's: a web server, a silent socket or nothing at
   all is one line at once ("nothing at ... answers as a Ray cluster").
2. ``_probe_auth`` asks the GCS itself, in a child process bounded in time (the GCS client is
   Ray's C++ one; a server that speaks gRPC but is not a GCS could hold it): first without a
   token. Let in: the cluster runs without authentication, and the driver turns token mode off
   even where a token file lies around (workers of such a cluster could not call back into a
   driver that demands a token). Refused: the cluster demands a token; the child tries the
   token Ray would use (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH`` names, else
   ``~/.ray/auth_token``) and a refusal names that source, never the token.
3. ``ray.init`` with the mode that worked, Ray's own output quiet unless ``-v``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import warnings
from typing import Any

from tal_pipeline.errors import InputError, NotAvailableError, UsageError

log = logging.getLogger(__name__)

LOCAL = None  # address for "start or join a local Ray instance"
GREETING_TIMEOUT_S = 4.0  # for the HTTP/2 greeting of whatever listens at HOST:PORT
PROBE_TIMEOUT_S = 20.0  # for the GCS probe's child process (Python and Ray's client start-up)
# the client's preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0)
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def quiet_ray() -> None:
    """Nothing of Ray's on our stdout, and on stderr only under ``-v``: its C++ core's log
    lines, the Python warnings (an IP probe, deprecations) and its loggers. Set before Ray is
    imported (it reads the environment then); a local instance's workers inherit the
    environment, and every actor calls this itself (a cluster's raylet starts them)."""
    if log.isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    for name in ("ray", "ray.data", "ray.util", "ray._private"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (or start/join a local instance): InputError in one
    line when nothing there answers as a Ray cluster, when the token is missing or wrong, or when
    Ray cannot start; UsageError for an address that is not HOST:PORT or ``auto``."""
    quiet_ray()
    if address == "auto":
        found = _auto_address()
        address = found if found and "://" not in found else address
    if address is not LOCAL and address != "auto":
        host, port = split_address(address)
        _speaks_grpc(host, port, address)
        os.environ["RAY_AUTH_MODE"] = _probe_auth(address)
    try:
        with _quiet_fds():
            import ray
    except ImportError:
        raise NotAvailableError("--ray needs Ray: pip install 'tal-pipeline[ray]' "
                                "(or pip install ray)") from None
    if ray.is_initialized():
        return
    level = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL
    kwargs: dict[str, Any] = {"log_to_driver": log.isEnabledFor(logging.DEBUG),
                              "logging_level": level}
    if address is LOCAL:
        kwargs["include_dashboard"] = False
    where = "a local Ray instance" if address is LOCAL else f"the Ray cluster at {address}"
    _ray_messages_to_log()  # before init: it binds the printer of the workers' logs (-v)
    try:
        with _quiet_fds():
            ray.init(address=address, **kwargs)
    except Exception as err:  # noqa: BLE001 (ConnectionError, AuthenticationError, RuntimeError...)
        cause = " ".join(str(err).split())[:300] or type(err).__name__
        if type(err).__name__ == "AuthenticationError":
            cause = _token_hint(token_source())
        hint = ("start one with `ray start --head` on the head machine and pass its HOST:PORT"
                if address is not LOCAL else "check `ray status` and the machine's resources")
        raise InputError(f"--ray: cannot connect to {where}: {cause} ({hint})") from None


def _ray_messages_to_log() -> None:
    """The driver prints the cluster's error messages (a raylet's death with its last 20 log
    lines, an infeasible request) on stdout, in colour: send them to our debug log instead (on
    stderr with ``-v``); the pool says in one line what happened to the user's videos."""
    import re

    import ray._private.worker as ray_worker

    ansi = re.compile(r"\x1b\[[0-9;]*m")

    def to_log(data, ignore_prefix=False) -> None:
        for line in data.get("lines", ()):
            log.debug("ray (%s): %s", data.get("pid", "?"), ansi.sub("", str(line)))

    ray_worker.print_to_stdstream = to_log


def _auto_address() -> str | None:
    """What Ray's ``auto`` would join: ``RAY_ADDRESS``, else the address the last ``ray start``
    on this machine recorded (so that it is probed like one given by hand)."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    record = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")
    try:
        with open(record, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray: expected HOST:PORT or auto, got {address!r}")
    return host.strip("[]"), int(port)


def _speaks_grpc(host: str, port: int, address: str, timeout: float = GREETING_TIMEOUT_S) -> None:
    """InputError unless HOST:PORT answers the HTTP/2 greeting with its own SETTINGS frame."""
    nothing = f"--ray: nothing at {address} answers as a Ray cluster"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:  # a frame header: 3 bytes length, type, flags, 4 bytes stream
                part = s.recv(9 - len(head))
                if not part:
                    break
                head += part
    except TimeoutError:
        raise InputError(f"{nothing}: no answer within {timeout:g} s (the address of "
                         "`ray start --head`, its --port, is wanted)") from None
    except OSError as err:
        cause = err.strerror or type(err).__name__
        raise InputError(f"{nothing}: {cause} (start one with `ray start --head` on the head "
                         "machine and pass its HOST:PORT)") from None
    if len(head) < 9 or head[3] != 0x04:
        web = head.startswith((b"HTTP/", b"<")) or b"html" in head.lower()  # 0.9: a page alone
        seen = "a web server (HTTP/1)" if web else "something else"
        raise InputError(f"{nothing}: {seen} listens there, not Ray's GCS (the address of "
                         "`ray start --head`, its --port, is wanted)")


def token_source() -> str | None:
    """Where Ray's client takes the token from, in its own order (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the token in the RAY_AUTH_TOKEN variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"the token in {path} (RAY_AUTH_TOKEN_PATH)"
    default = os.path.expanduser("~/.ray/auth_token")
    return f"the token in {default}" if os.path.isfile(default) else None


def _token_hint(source: str | None) -> str:
    """What went wrong with the token and what to do, naming where it came from."""
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named and not os.environ.get("RAY_AUTH_TOKEN") and not _readable(named):
        return (f"the cluster demands a token and {named} (RAY_AUTH_TOKEN_PATH) cannot be read "
                "or is empty")
    if source is None:
        return ("the cluster demands a token and none was found (copy the head machine's "
                "~/.ray/auth_token here, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
    return (f"the cluster refused {source} (use the head machine's token: its "
            "~/.ray/auth_token, `ray get-auth-token` there)")


def _readable(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return bool(f.read(1))
    except OSError:
        return False


def _probe_auth(address: str) -> str:
    """``RAY_AUTH_MODE`` for this cluster ("disabled" or "token"), asked of its GCS in a child
    process; InputError for a missing or refused token or a GCS that does not answer."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True,
                              text=True, env=env, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(f"--ray: nothing at {address} answers as a Ray cluster: its gRPC server "
                         f"gave no cluster id within {PROBE_TIMEOUT_S:g} s") from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " ".join(proc.stderr.split())[-300:]
        raise InputError(f"--ray: could not ask {address} whether it is a Ray cluster: "
                         f"{tail or f'the probe exited with status {proc.returncode}'}") from None
    log.debug("--ray: %s answered %s", address, answer)
    if answer["mode"] in ("disabled", "token"):
        return answer["mode"]
    if answer["mode"] in ("no-token", "bad-token"):
        source = token_source() if answer["mode"] == "bad-token" else None
        raise InputError(f"--ray: cannot connect to the Ray cluster at {address}: "
                         f"{_token_hint(source)}")
    raise InputError(f"--ray: nothing at {address} answers as a Ray cluster: {answer['error']}")


# The child: ask for the cluster id and a key without a token, then (if refused) with the
# token Ray finds; one JSON line: {"mode": "disabled"|"token"|"no-token"|"bad-token"|"error"}.
_PROBE = r"""
import json, os, sys
os.environ["RAY_AUTH_MODE"] = "disabled"
from ray._raylet import AuthenticationTokenLoader, Config, GcsClient

def ask():
    try:
        GcsClient(address=sys.argv[1]).internal_kv_get(b"tal-probe", None, timeout=5)
        return "ok"
    except Exception as err:
        return "auth" if type(err).__name__ == "AuthenticationError" else " ".join(str(err).split())[:200]

first = ask()
if first == "ok":
    answer = {"mode": "disabled"}
elif first != "auth":
    answer = {"mode": "error", "error": first}
else:
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")
    try:
        found = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    except Exception:  # RAY_AUTH_TOKEN_PATH names a file that cannot be read
        found = False
    if not found:
        answer = {"mode": "no-token"}
    else:
        second = ask()
        answer = {"mode": "token" if second == "ok" else "bad-token" if second == "auth" else "error",
                  "error": second}
print(json.dumps(answer))
"""


class _quiet_fds:
    """Ray's start-up writes to the file descriptors themselves, before its own log level
    applies: an IP-probe warning about a public DNS address, the log level it read, the
    dashboard line. Unless ``-v``, descriptors 1 and 2 point at /dev/null while Ray is imported
    and joined (a failure comes back as an exception, which ``connect`` words itself)."""

    def __enter__(self):
        self.saved: list[tuple[int, int]] = []
        if log.isEnabledFor(logging.DEBUG):
            return
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            self.saved.append((fd, os.dup(fd)))
            os.dup2(null, fd)
        os.close(null)

    def __exit__(self, *exc):
        for fd, saved in self.saved:
            os.dup2(saved, fd)
            os.close(saved)
