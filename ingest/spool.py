r"""Store-and-forward: a bounded on-disk FIFO of line-protocol batches that InfluxDB could not take yet.

Why on disk and not in memory: the promise is that an acked message is never lost, and an ack tells the
broker to forget the message. So a batch may only be acked once it is either in InfluxDB or somewhere
that survives a SIGKILL, a power cut or an OOM kill. Telegraf's in-memory buffer drops the oldest
points when it fills; this spool instead refuses new batches when full, and the pipeline then stops
acking, so the broker's persistent session holds the rest (backpressure, not loss).

Crash safety comes from the write protocol, not from a recovery step:

1. the segment is written to ``<seq>.tmp``, flushed and ``fsync``-ed;
2. it is renamed to ``<seq>.batch`` (atomic on POSIX) and the directory is ``fsync``-ed;
3. only then does the caller ack the messages.

A crash before 2 leaves a ``.tmp`` file (deleted at the next start; its messages were never acked and
the broker redelivers them); a crash after 2 leaves a complete segment (replayed at the next start; if
the crash came before the ack, the broker also redelivers, and the second write is harmless because
InfluxDB overwrites a point with the same series and timestamp). Each segment carries its length and a
CRC-32 of its body, so a segment damaged by the disk (never by us) is moved aside as ``.corrupt`` and
reported, instead of being replayed as garbage or silently dropped.

Segments replay oldest first (sequence numbers are monotonic across restarts). Line protocol cannot
contain a newline (``store.lineproto`` escapes them), so the body is the lines joined by ``\\n``.

One directory belongs to one ingester: an exclusive ``flock`` on ``.lock`` makes a second ingester
pointed at the same directory fail at start with a message, instead of two replaying the same segments.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Segment", "Spool", "SpoolSummary", "summarize"]

log = structlog.get_logger("ingest.spool")

_MAGIC: Final = "oxyfleet-spool"
_VERSION: Final = 1
_SUFFIX: Final = ".batch"


@dataclass(frozen=True, slots=True)
class Segment:
    """One spooled batch: its lines, how many of them are data (the rest are rejected records)."""

    seq: int
    lines: list[str]
    n_data: int
    created_ns: int


@dataclass(slots=True)
class _Entry:
    seq: int
    size: int
    created_ns: int


def _header(n_lines: int, n_data: int, body: bytes, created_ns: int) -> bytes:
    crc = zlib.crc32(body)
    return (
        f"{_MAGIC} {_VERSION} lines={n_lines} data={n_data} bytes={len(body)} crc32={crc:08x} "
        f"created_ns={created_ns}\n"
    ).encode()


def _parse_header(line: bytes) -> dict[str, int]:
    """Fields of a header line; ValueError when it is not one of ours."""
    parts = line.decode("ascii").split()
    if len(parts) < 2 or parts[0] != _MAGIC or parts[1] != str(_VERSION):
        msg = "not an oxyfleet spool segment (bad magic or version)"
        raise ValueError(msg)
    fields: dict[str, int] = {}
    for part in parts[2:]:
        key, _, value = part.partition("=")
        fields[key] = int(value, 16) if key == "crc32" else int(value)
    for key in ("lines", "data", "bytes", "crc32", "created_ns"):
        if key not in fields:
            msg = f"spool segment header lacks {key}"
            raise ValueError(msg)
    return fields


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Bounded FIFO of batches in ``directory``; used from one thread (the pipeline's)."""

    def __init__(self, directory: Path, max_bytes: int, *, fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.corrupt = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            msg = f"OXYFLEET_SPOOL__DIR: cannot use {directory}: {exc.strerror}; point it at a writable directory"
            raise ConfigError(msg) from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            msg = (
                f"OXYFLEET_SPOOL__DIR: {directory} is in use by another ingester; give each ingester "
                "process its own spool directory"
            )
            raise ConfigError(msg) from exc
        self._entries: list[_Entry] = []
        self._bytes = 0
        self._scan()
        self._next_seq = self._entries[-1].seq + 1 if self._entries else 1

    # --- state ----------------------------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """Segments waiting to be replayed."""
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes on disk of the waiting segments."""
        return self._bytes

    def oldest_age_s(self) -> float:
        """Age of the oldest waiting segment (0 when empty): how far behind InfluxDB is."""
        if not self._entries:
            return 0.0
        return max(0.0, (time.time_ns() - self._entries[0].created_ns) / 1e9)

    def has_room(self, size: int) -> bool:
        """Whether a segment of ``size`` bytes fits under the bound."""
        return self._bytes + size <= self.max_bytes

    # --- operations -----------------------------------------------------------------------------------

    def put(self, lines: Sequence[str], n_data: int, *, headroom: int = 0) -> bool:
        """Persist a batch durably; False (and nothing written) when it does not fit or the disk fails.

        ``headroom`` bytes beyond the bound are allowed: the ingester's last stats points at a stop
        during an outage (a few KB) are worth keeping even when data batches no longer fit.
        """
        body = "\n".join(lines).encode()
        created_ns = time.time_ns()
        data = _header(len(lines), n_data, body, created_ns) + body
        if not self.has_room(len(data) - headroom):
            return False
        seq = self._next_seq
        tmp = self.directory / f"{seq:016d}.tmp"
        final = self.directory / f"{seq:016d}{_SUFFIX}"
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            tmp.rename(final)
            if self.fsync:
                _fsync_dir(self.directory)
        except OSError as exc:
            # A full or failing disk is "no room": the caller keeps the batch unacked instead.
            log.error("ingest.spool_write_failed", path=str(final), error=str(exc))  # noqa: TRY400
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self._next_seq = seq + 1
        self._entries.append(_Entry(seq, len(data), created_ns))
        self._bytes += len(data)
        return True

    def peek(self) -> Segment | None:
        """The oldest segment, read and verified; a damaged one is moved aside and the next one tried."""
        while self._entries:
            entry = self._entries[0]
            path = self._path(entry.seq)
            try:
                return self._read(entry.seq, path)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._quarantine(entry, path, str(exc))
        return None

    def remove(self, seq: int) -> None:
        """Forget a replayed segment (it is in InfluxDB now)."""
        if not self._entries or self._entries[0].seq != seq:
            msg = f"spool: remove({seq}) is not the oldest segment"
            raise RuntimeError(msg)
        entry = self._entries.pop(0)
        self._bytes -= entry.size
        with contextlib.suppress(FileNotFoundError):
            self._path(seq).unlink()

    def close(self) -> None:
        """Release the directory lock."""
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    # --- internals ------------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_SUFFIX}"

    def _scan(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            # Written but never renamed: its messages were never acked, so the broker redelivers them.
            log.info("ingest.spool_partial_removed", path=str(tmp))
            tmp.unlink()
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                seq = int(path.stem)
                with path.open("rb") as fh:
                    header = _parse_header(fh.readline(200))
                size = path.stat().st_size
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._quarantine(None, path, str(exc))
                continue
            self._entries.append(_Entry(seq, size, header["created_ns"]))
            self._bytes += size
        if self._entries:
            log.info(
                "ingest.spool_found",
                batches=len(self._entries),
                bytes=self._bytes,
                oldest_age_s=round(self.oldest_age_s(), 1),
                note="they are replayed to InfluxDB oldest first",
            )

    def _read(self, seq: int, path: Path) -> Segment:
        raw = path.read_bytes()
        newline = raw.find(b"\n")
        if newline < 0:
            msg = "segment has no header line"
            raise ValueError(msg)
        header = _parse_header(raw[:newline])
        body = raw[newline + 1 :]
        if len(body) != header["bytes"] or zlib.crc32(body) != header["crc32"]:
            msg = f"segment body damaged (length {len(body)} of {header['bytes']}, or checksum mismatch)"
            raise ValueError(msg)
        lines = body.decode().split("\n") if body else []
        if len(lines) != header["lines"]:
            msg = f"segment holds {len(lines)} lines, header says {header['lines']}"
            raise ValueError(msg)
        return Segment(seq, lines, header["data"], header["created_ns"])

    def _quarantine(self, entry: _Entry | None, path: Path, reason: str) -> None:
        self.corrupt += 1
        target = path.with_suffix(".corrupt")
        log.error(
            "ingest.spool_segment_damaged",
            path=str(path),
            moved_to=str(target),
            reason=reason,
            hint="the disk damaged a spooled batch; inspect the file, replay it by hand with /write if readable",
        )
        with contextlib.suppress(OSError):
            path.rename(target)
        if entry is not None and self._entries and self._entries[0] is entry:
            self._entries.pop(0)
            self._bytes -= entry.size


@dataclass(frozen=True, slots=True)
class SpoolSummary:
    """What ``oxyfleet check`` shows of a spool directory, read without taking its lock."""

    batches: int
    bytes: int
    oldest_age_s: float
    corrupt: int
    writable: bool


def summarize(directory: Path) -> SpoolSummary:
    """Look at a spool directory another process may be using (read-only, best effort)."""
    batches = size = corrupt = 0
    oldest: int | None = None
    if directory.is_dir():
        for path in directory.iterdir():
            if path.suffix == _SUFFIX:
                try:  # the ingester may replay and delete it meanwhile: then it is simply not counted
                    length = path.stat().st_size
                    with path.open("rb") as fh:
                        created = _parse_header(fh.readline(200))["created_ns"]
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
                batches += 1
                size += length
                oldest = created if oldest is None else min(oldest, created)
            elif path.suffix == ".corrupt":
                corrupt += 1
        writable = os.access(directory, os.W_OK)
    else:
        parent = next((p for p in directory.parents if p.exists()), Path())
        writable = os.access(parent, os.W_OK)
    age = 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)
    return SpoolSummary(batches, size, age, corrupt, writable)
