"""The ``oxyfleet`` command: the shell that composes the processes. Nothing imports it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oxyfleet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
