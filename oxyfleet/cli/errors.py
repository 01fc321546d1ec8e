"""The one place where what went wrong becomes a message and an exit code.

Exit codes (documented in the README and kept stable for scripts):

- 0: done;
- 1: a check failed, a payload is invalid, a filter matched nothing, a service could not be reached;
- 2: configuration or usage error: the message names the variable or option to fix;
- 3: a service refused us for good (credentials, missing database): retrying cannot help.

Every command runs inside :func:`exit_codes` (the :func:`handled` decorator), as httpx's transports run
inside ``map_httpcore_exceptions()``: commands raise oxyfleet's exceptions (:mod:`core.errors`) or
:class:`Failure`, and nothing else decides what the operator reads. Library exceptions are translated
here too, so that no urllib3 or niquests object repr (``<urllib3.connection.HTTPConnection object at
0x7f...>``) reaches a terminal: :func:`describe` names the cause ("connection refused", "timed out").
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import socket
import ssl
import sys
from typing import TYPE_CHECKING, Final, NoReturn, ParamSpec, TypeVar

import click

from core.errors import ConfigError, SinkError, SinkFatalError, SinkRetryableError, SourceAuthError
from devices.credentials import CredentialsError
from devices.inventory import InventoryError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_FATAL",
    "Failure",
    "describe",
    "exit_codes",
    "fail",
    "handled",
    "readable",
    "remember",
]

EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FATAL: Final = 3

# What a command talks to, remembered in the click context so messages can say where to look.
_INFLUX_URL: Final = "oxyfleet.influx_url"
_GRAFANA_URL: Final = "oxyfleet.grafana_url"

_OBJECT_REPR: Final = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>:?\s*")
# Exceptions of the HTTP libraries whose str() is a nest of reprs; their cause is shown instead.
_LIBRARY_MODULES: Final = ("urllib3", "urllib3_future", "niquests", "requests")
_NETWORK_ERRNOS: Final = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
)
_TIMEOUT_NAMES: Final = frozenset(
    {"ConnectTimeoutError", "ReadTimeoutError", "ConnectTimeout", "ReadTimeout"}
)

P = ParamSpec("P")
R = TypeVar("R")


class Failure(Exception):  # noqa: N818 - a command's verdict, not an error of the program
    """A command's negative verdict: print ``message`` and exit with ``code`` (1 unless said)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """End the command with ``message`` on stderr and exit ``code``."""
    raise Failure(message, code)


def remember(*, influx_url: str | None = None, grafana_url: str | None = None) -> None:
    """Note what the running command talks to, for the hints in its error messages."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    if influx_url is not None:
        ctx.meta[_INFLUX_URL] = influx_url
    if grafana_url is not None:
        ctx.meta[_GRAFANA_URL] = grafana_url


def _recalled(key: str) -> str | None:
    ctx = click.get_current_context(silent=True)
    value = None if ctx is None else ctx.meta.get(key)
    return value if isinstance(value, str) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was caused by: ``__cause__``, ``__context__``, urllib3's ``reason``."""
    todo, seen = [exc], set()
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        nested = [item.__cause__, item.__context__, getattr(item, "reason", None)]
        nested += [a for a in item.args if isinstance(a, BaseException)]
        todo += [n for n in nested if isinstance(n, BaseException)]


def _is_library(exc: BaseException) -> bool:
    return type(exc).__module__.split(".", 1)[0] in _LIBRARY_MODULES


def _network_reason(exc: BaseException) -> str | None:
    """What a network failure comes down to, in words: "connection refused", "timed out"..."""
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, socket.gaierror):
            return f"cannot resolve the host name ({item.strerror or item})"
        if isinstance(item, ssl.SSLError):
            return f"TLS failed: {item.reason or item.strerror or item}"
        if isinstance(item, TimeoutError | socket.timeout):
            return "timed out"
        if not isinstance(item, OSError) or _is_library(item) or not item.strerror:
            continue
        if isinstance(item, ConnectionError) or item.errno in _NETWORK_ERRNOS:  # not a file's error
            return item.strerror[0].lower() + item.strerror[1:]
    if any(type(item).__name__ in _TIMEOUT_NAMES for item in chain):
        return "timed out"
    return None


def readable(text: str) -> str:
    """A message some layer already put in words, without the library object reprs it may quote."""
    return _OBJECT_REPR.sub("", text).strip()


def describe(exc: BaseException) -> str:
    """``exc`` as an operator should read it: library reprs replaced by their cause."""
    text = str(exc)
    reason = _network_reason(exc)
    if reason is not None:
        for item in _chain(exc):
            if _is_library(item) and str(item) and str(item) in text:
                text = text.replace(str(item), reason)
    return readable(text) or type(exc).__name__


def _grafana_message(exc: BaseException) -> tuple[str, int] | None:
    """Grafana's answers (grafana-client's exceptions), without importing grafana-client for every command."""
    status = getattr(exc, "status_code", None)
    if type(exc).__module__.split(".", 1)[0] != "grafana_client" or not isinstance(status, int):
        return None
    url = _recalled(_GRAFANA_URL) or "the given URL"
    if status == 0:  # no HTTP answer at all
        return f"cannot reach Grafana at {url}: {describe(exc)}", EXIT_FAILED
    message = getattr(exc, "message", None) or describe(exc)
    code = EXIT_FATAL if status in (401, 403) else EXIT_FAILED
    hint = " (check the service-account token in GRAFANA_TOKEN)" if status in (401, 403) else ""
    return f"Grafana at {url} answered {status}: {message}{hint}", code


def _message(exc: Exception) -> tuple[str, int] | None:  # noqa: PLR0911 - one branch per kind of failure
    """The message and exit code for ``exc``, or None when it is not ours to map (a bug: let it show)."""
    if isinstance(exc, Failure):
        return str(exc), exc.code
    if isinstance(exc, ConfigError):
        return str(exc), EXIT_CONFIG
    if isinstance(exc, SinkFatalError | SourceAuthError):
        return describe(exc), EXIT_FATAL
    if isinstance(exc, SinkError):
        url = _recalled(_INFLUX_URL)
        unreachable = isinstance(exc, SinkRetryableError) and exc.status is None  # no HTTP answer at all
        hint = f" (is InfluxDB running at {url}? `oxyfleet check` tells more)" if url and unreachable else ""
        return describe(exc) + hint, EXIT_FAILED
    if isinstance(exc, InventoryError):
        return f"inventory has problems:\n{exc}", EXIT_FAILED
    if isinstance(exc, CredentialsError):  # e.g. only root may give the files to the broker's user
        return str(exc), EXIT_FAILED
    if (grafana := _grafana_message(exc)) is not None:
        return grafana
    if isinstance(exc, OSError):
        grafana_url = _recalled(_GRAFANA_URL)
        if grafana_url is not None and _network_reason(exc) is not None:
            return f"cannot reach Grafana at {grafana_url}: {describe(exc)}", EXIT_FAILED
        return describe(exc), EXIT_FAILED
    return None


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Run a command body; turn what it raises into ``oxyfleet: <message>`` on stderr and the exit code."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise  # click's own usage errors and exits already follow the convention (usage error: 2)
    except BrokenPipeError:
        # The reader went away (`oxyfleet devices list | head`): nothing to tell, and nobody to tell it to.
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor (a test runner)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        mapped = _message(exc)
        if mapped is None:
            raise
        message, code = mapped
        click.echo(f"oxyfleet: {message}", err=True)
        sys.exit(code)


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a click command's function so that it runs inside :func:`exit_codes`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with exit_codes():
            return func(*args, **kwargs)

    return wrapper
