"""The on-disk spool alone: durability across reopen, the bound, crash leftovers, damage, the lock."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import pytest

from core.errors import ConfigError
from ingest.spool import Spool, summarize

if TYPE_CHECKING:
    from pathlib import Path


def lines(n: int, tag: str = "a") -> list[str]:
    return [f"telemetry,unit_id={tag}{i} purity_pct=93.{i} {1_700_000_000_000_000_000 + i}" for i in range(n)]


def test_batches_survive_a_reopen_and_come_back_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    assert spool.put(lines(3, "a"), n_data=2)
    assert spool.put(lines(2, "b"), n_data=2)
    spool.close()  # a new process: only what is on disk counts

    again = Spool(tmp_path, 1 << 20)
    assert (again.batches, again.bytes) == (2, sum(p.stat().st_size for p in tmp_path.glob("*.batch")))
    first = again.peek()
    assert first is not None
    assert (first.lines, first.n_data) == (lines(3, "a"), 2)
    again.remove(first.seq)
    assert again.put(lines(1, "c"), n_data=1)  # sequence continues after the reopened ones
    second, third = again.peek(), None
    assert second is not None
    assert second.lines == lines(2, "b")
    again.remove(second.seq)
    third = again.peek()
    assert third is not None
    assert third.lines == lines(1, "c")
    assert third.seq > second.seq
    again.remove(third.seq)
    assert (again.peek(), again.batches, again.bytes) == (None, 0, 0)
    assert not list(tmp_path.glob("*.batch"))


def test_a_full_spool_refuses_and_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 4096)
    assert spool.put(lines(40), n_data=40)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert not spool.put(lines(40), n_data=40)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert spool.batches == 1
    assert spool.bytes <= spool.max_bytes


def test_a_failing_disk_is_no_room_not_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20)
    for path in (tmp_path / "s").iterdir():
        path.unlink()
    (tmp_path / "s").rmdir()  # every write now fails with ENOENT
    assert not spool.put(lines(2), n_data=2)
    assert spool.batches == 0


def test_a_segment_never_renamed_is_dropped_at_start_and_counted_as_unacked(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    assert spool.put(lines(2), n_data=2)
    spool.close()
    (tmp_path / "0000000000000002.tmp").write_bytes(b"oxyfleet-spool 1 lines=5 data=5 bytes=999 crc")
    again = Spool(tmp_path, 1 << 20)
    assert again.batches == 1
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[:-7], id="truncated"),
        pytest.param(lambda raw: raw[:-3] + b"X" + raw[-2:], id="flipped-byte"),
        pytest.param(lambda raw: b"garbage\n" + raw, id="bad-header"),
    ],
)
def test_a_damaged_segment_is_moved_aside_reported_and_the_next_one_replays(
    tmp_path: Path, damage: object
) -> None:
    spool = Spool(tmp_path, 1 << 20)
    assert spool.put(lines(3, "a"), n_data=3)
    assert spool.put(lines(3, "b"), n_data=3)
    spool.close()
    first = min(tmp_path.glob("*.batch"))
    assert callable(damage)
    first.write_bytes(damage(first.read_bytes()))
    again = Spool(tmp_path, 1 << 20)
    segment = again.peek()
    assert segment is not None
    assert segment.lines == lines(3, "b")
    assert again.corrupt == 1
    assert first.with_suffix(".corrupt").exists()
    assert summarize(tmp_path).corrupt == 1


def test_one_directory_belongs_to_one_ingester(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    with pytest.raises(ConfigError, match="in use by another ingester"):
        Spool(tmp_path, 1 << 20)
    spool.close()
    Spool(tmp_path, 1 << 20).close()


def test_an_unusable_directory_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="OXYFLEET_SPOOL__DIR"):
        Spool(tmp_path / "file" / "spool", 1 << 20)


def test_summary_reads_a_spool_in_use(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    assert summarize(tmp_path).batches == 0
    assert spool.put(lines(2), n_data=2)
    time.sleep(0.05)
    assert spool.put(lines(2), n_data=2)
    summary = summarize(tmp_path)
    assert (summary.batches, summary.bytes, summary.writable) == (2, spool.bytes, True)
    assert summary.oldest_age_s >= 0.05
    assert summary.oldest_age_s == pytest.approx(spool.oldest_age_s(), abs=0.05)
    missing = summarize(tmp_path / "not-yet")
    assert (missing.batches, missing.writable) == (0, os.access(tmp_path, os.W_OK))
