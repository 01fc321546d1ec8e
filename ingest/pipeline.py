"""Wiring: source -> decoder -> line builder -> sink, with batching, retries, the spool and ordered acks.

A batch is a transaction, as in Telegraf's buffer: each message in it ends written or rejected
(recorded in ``rejected``), and only then are the batch's messages acked, in arrival order.

When the sink cannot write (InfluxDB down, throttling, timing out), the batch goes to the on-disk spool
(:mod:`ingest.spool`) and is acked, and later batches go straight to the spool until the backoff delay
has passed; then one write probes InfluxDB. Between live batches the spool replays, oldest first, for at
most ``replay_budget_s``, so live data keeps flowing while a backlog drains. When the spool is full (or
disabled) the batch is kept and retried with backoff and nothing is acked meanwhile, so the broker keeps
holding what comes after it.

One write is in flight while the next batch is decoded (``overlap_writes``, issue 16: a serial loop left
the ingester idle while InfluxDB answered). Only the HTTP request of a batch's first write attempt runs in
the writer thread; everything else (decoding, retries, the spool, replay, the counters, acks) stays in the
pipeline thread, so there are still no locks. Batch n is finished (written, spooled or held, then acked)
before batch n+1 is sent, and replay and the counters are written only while nothing is in flight: a
failure of batch n stops batch n+1 from being sent, and acks stay in arrival order.

Long module: the batch transaction (decode, write, spool, replay, ack, stats) is one state machine over
one batch and one backoff clock; its parts stay together so the order of acks can be read in one place.
Composition from settings is in :mod:`ingest.service`.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from core.errors import SinkError, SinkFatalError, SinkRetryableError, SourceAuthError
from ingest.decode import Decoded, Decoder, Inbound, Reason, Rejection
from ingest.stats import Stats
from store.schema import LATE_AFTER_MS, LATE_MARKER_WINDOW_MS
from store.writer import InfluxSink, WriteReport

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable
    from concurrent.futures import Future

    from core.settings import BufferSettings
    from ingest.spool import Spool
    from store.lineproto import LineBuilder

__all__ = ["Pipeline", "Source"]

log = structlog.get_logger("ingest.pipeline")

_RATE_WINDOW_S = 10.0
# Stats points InfluxDB could not take yet, kept with their times (issue 19: an outage must show in the
# stored ``oxyfleet_ingest`` series). 8,640 points are a day at the default 10 s interval, ~10 MB at most.
_STATS_KEPT = 8_640
_STATS_HEADROOM = 1 << 20  # at a stop they may go past a full spool's bound by this much (spool.put)
_LATE_WINDOW_NS = LATE_MARKER_WINDOW_MS * 1_000_000
_LATE_MARKED_MAX = 200_000  # units remembered for late markers (a few MB)
# While a write is in flight, the inbox is polled in slices this long, so that a batch's acks go out
# soon after InfluxDB's answer and not only when the next batch is full or old enough.
_ANSWER_POLL_S = 0.01


class Source(Protocol):
    """What the pipeline needs from a message source (MQTT in production, a list in unit tests)."""

    fatal: SourceAuthError | None
    reconnects: int

    def take(self, limit: int, timeout: float, max_bytes: int | None = None) -> list[Inbound]:
        """Up to ``limit`` waiting messages, waiting at most ``timeout`` for the first.

        Their payloads stop at ``max_bytes`` (at least one message is taken).
        """
        ...

    def ack(self, messages: Iterable[Inbound]) -> int:
        """Acknowledge handled messages, in order."""
        ...

    def pending(self) -> int:
        """Messages waiting to be taken."""
        ...


class StoppedError(Exception):
    """Stop was requested while a batch could not be written; it stays unacked for redelivery."""


@dataclass(slots=True)
class _Origin:
    message: Inbound
    unit_id: str | None


@dataclass(slots=True)
class _Late:
    """Late readings of one unit in one batch: the first message with one, and their time range."""

    first: Inbound
    from_ms: int
    to_ms: int
    count: int


@dataclass(slots=True)
class _Batch:
    """One batch from decoding to its acks: its lines, where each came from, and its write in flight."""

    messages: list[Inbound]
    lines: list[str]
    n_data: int  # lines[:n_data] are data, the rest rejected records
    origins: list[_Origin]
    rejections: list[Rejection]
    started: float  # perf_counter() when decoding began
    sent: Future[WriteReport] | None = None  # first write attempt, sent from the writer thread


class Pipeline:
    """Runs the batch loop in the calling thread until ``stop`` is set or something fatal happens."""

    def __init__(
        self,
        source: Source,
        sink: InfluxSink,
        decoder: Decoder,
        builder: LineBuilder,
        buffer: BufferSettings,
        *,
        stats: Stats | None = None,
        stats_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        spool: Spool | None = None,
        replay_budget_s: float = 0.5,
    ) -> None:
        self.source = source
        self.sink = sink
        self.decoder = decoder
        self.builder = builder
        self.buffer = buffer
        self.stats = stats or Stats()
        self.stats_interval_s = stats_interval_s
        self.clock = clock
        self._warned: set[str] = set()
        self._outage_since: float | None = None
        self._unacked: deque[int] = deque()  # receive time of the first message of each batch in hand
        self._in_hand = 0  # messages decoded and not yet acked
        self._writer: ThreadPoolExecutor | None = None  # the one write in flight (overlap_writes)
        self.spool = spool
        self.replay_budget_s = replay_budget_s
        self._delay = buffer.retry_initial_s
        self._retry_at = 0.0  # clock() before which InfluxDB is not tried again (spooling meanwhile)
        self._replayed: deque[tuple[float, int]] = deque()  # (clock, points) of recent replays, for the rate
        self._spool_full = False
        self._unwritable: str | None = None  # why InfluxDB cannot be written right now (for /healthz)
        self._stats_pending: deque[str] = deque(maxlen=_STATS_KEPT)
        self._next_stats = clock() + stats_interval_s
        # (kind, unit) -> (minute of arrival, from_ms, to_ms, count, received_ns) of its last late marker
        self._late_marked: dict[tuple[str, str], tuple[int, int, int, int, int]] = {}

    # --- loop ----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Collect, write and ack batches until ``stop`` (or ``duration_s``) - then flush and return."""
        end = None if duration_s is None else self.clock() + duration_s
        self._next_stats = self.clock() + self.stats_interval_s
        if self.buffer.overlap_writes:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="influx-write")
        try:
            self._loop(stop, end)
        except StoppedError:
            log.info("ingest.stopped_unacked", messages=self._in_hand)
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=False)  # a request still waiting for its answer is not acked
                self._writer = None
        # Whatever was collected is handled; the rest of the queue is unacked and will be redelivered.

    def _loop(self, stop: threading.Event, end: float | None) -> None:
        sending: _Batch | None = None  # sent, not yet answered (and so not acked)
        while not stop.is_set():
            if self.source.fatal is not None:
                raise self.source.fatal
            if end is not None and self.clock() >= end:
                break
            messages, sending = self._gather(stop, sending)
            batch = self._prepare(messages) if messages else None
            if sending is not None:
                self._finish(sending, stop)
                sending = None
            # Replay and the counters only between writes: never beside a live batch in flight.
            self.replay(stop, self.replay_budget_s)
            self._stats_if_due()
            if batch is not None:
                if self._send(batch):
                    sending = batch
                else:
                    self._finish(batch, stop)
        if sending is not None:
            self._finish(sending, stop)

    def _stats_if_due(self) -> None:
        if self.clock() >= self._next_stats:
            self._next_stats = self.clock() + self.stats_interval_s
            self.write_stats()

    def _collect(self, stop: threading.Event) -> list[Inbound]:
        """A batch: full (count or payload bytes), or as old as ``batch_age_s``; [] after 0.2 s idle."""
        return self._gather(stop, None)[0]

    def _gather(self, stop: threading.Event, sending: _Batch | None) -> tuple[list[Inbound], _Batch | None]:
        """Collect a batch; finish ``sending`` as soon as InfluxDB has answered it (then None is returned).

        With a write in flight a batch's payloads are bounded by half the byte budget, so that the two
        batches in hand hold no more than one batch did before the overlap (the inbox holds the rest of
        ``max_bytes``, as before).
        """
        size = self.buffer.batch_size
        budget = self.buffer.max_bytes // 2 if self._writer is not None else self.buffer.max_bytes
        batch: list[Inbound] = []
        held = 0
        deadline = self.clock() + 0.2  # for the first message; then batch_age_s from it
        while len(batch) < size and held < budget and not stop.is_set():
            if sending is not None and sending.sent is not None and sending.sent.done():
                done, sending = sending, None
                self._finish(done, stop)
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            wait = min(remaining, 0.2 if sending is None else _ANSWER_POLL_S)
            more = self.source.take(size - len(batch), wait, budget - held)
            if not more:
                continue
            if not batch:
                self._unacked.append(more[0].received_ns)
                deadline = self.clock() + self.buffer.batch_age_s
            batch.extend(more)
            held += sum([len(m.payload) for m in more])
        return batch, sending

    # --- one batch -----------------------------------------------------------------------------------

    def decode(self, msg: Inbound) -> Decoded:
        """Decode one message; a bug in decoding becomes a rejection, never a crash of the loop."""
        try:
            return self.decoder.decode(msg)
        except Exception as exc:  # pragma: no cover - the decoder is written not to raise
            log.exception("ingest.decode_failed", topic=msg.topic[:200])
            return Decoded(
                rejections=[
                    Rejection(
                        Reason.SCHEMA_INVALID,
                        f"internal decoding error: {exc!r}"[:300],
                        msg.topic,
                        msg.payload,
                        msg.received_ns,
                    )
                ]
            )

    def _lines(self, batch: list[Inbound]) -> tuple[list[str], list[_Origin], list[Rejection]]:
        """Data lines of a batch (telemetry, late-data markers, connection events) with their origins.

        Late readings give at most one ``late_data`` point per unit per minute of arrival unless they
        start earlier than that point says: on a backlog drain every reading is late, and a marker per
        message doubled the points written (issue 16: 2.05 points per reading). Later readings of the
        unit in the same minute rewrite that point (same series and time) with the wider range, and
        nothing when it covers them already. The health engine reads a marker's unit, ``from_ms`` and
        ``to_ms``, and looks a marker window back (store.schema.LATE_MARKER_WINDOW_MS), so it sees the
        rewritten point after readings that arrive later in the same minute.
        """
        lines: list[str] = []
        origins: list[_Origin] = []
        rejections: list[Rejection] = []
        late: dict[tuple[str, str], _Late] = {}
        telemetry = self.builder.telemetry
        for msg in batch:
            decoded = self.decode(msg)
            self.stats.unknown_fields += decoded.unknown_fields
            late_before_ms = msg.received_ns // 1_000_000 - LATE_AFTER_MS
            for item in decoded.readings:
                lines.append(telemetry(item))
                origins.append(_Origin(msg, item.unit_id))
                ts = item.reading.ts
                if ts < late_before_ms:
                    span = late.get((item.kind, item.unit_id))
                    if span is None:
                        late[item.kind, item.unit_id] = _Late(msg, ts, ts, 1)
                    else:
                        span.from_ms = min(span.from_ms, ts)
                        span.to_ms = max(span.to_ms, ts)
                        span.count += 1
            for change in decoded.connections:
                lines.append(self.builder.connection(change))
                origins.append(_Origin(msg, change.unit_id))
            rejections.extend(decoded.rejections)
        marked = self._late_marked
        for (kind, unit_id), span in late.items():
            window = span.first.received_ns // _LATE_WINDOW_NS
            from_ms, to_ms, count, received_ns = span.from_ms, span.to_ms, span.count, span.first.received_ns
            seen = marked.get((kind, unit_id))
            if seen is not None and seen[0] == window and seen[1] <= from_ms:
                if to_ms <= seen[2]:
                    continue  # this minute's marker already covers these readings
                # The same point again (its time is keyed by the unit and from_ms, in this minute),
                # rewritten with the wider range: the health engine reads from_ms and to_ms.
                from_ms, count, received_ns = seen[1], seen[3] + count, seen[4]
            marked[kind, unit_id] = (window, from_ms, to_ms, count, received_ns)
            lines.append(self.builder.late_data(kind, unit_id, from_ms, to_ms, count, received_ns))
            origins.append(_Origin(span.first, unit_id))
        if len(marked) > _LATE_MARKED_MAX:
            marked.clear()  # a bound, not a cache policy: at worst one more marker per unit
        return lines, origins, rejections

    def handle(self, batch: list[Inbound], stop: threading.Event) -> None:
        """Write (or spool) or reject every message of ``batch``, then ack them all in arrival order."""
        self._finish(self._prepare(batch), stop)

    def _prepare(self, batch: list[Inbound]) -> _Batch:
        """Decode and validate a batch and build its lines (nothing is written or acked yet)."""
        started = time.perf_counter()
        self.builder.tags.refresh()
        self.stats.messages_received += len(batch)
        self._in_hand += len(batch)
        lines, origins, rejections = self._lines(batch)
        n_data = len(lines)
        lines.extend(self.builder.rejected(r) for r in rejections)
        return _Batch(batch, lines, n_data, origins, rejections, started)

    def _send(self, batch: _Batch) -> bool:
        """Start the batch's first write in the writer thread; False when it must go the serial way.

        Serial when overlapping is off, and while backing off from a failed write: then ``_finish``
        spools it (or holds it) at once, as before.
        """
        if self._writer is None or self.clock() < self._retry_at:
            return False
        batch.sent = self._writer.submit(self.sink.write, batch.lines)
        return True

    def _finish(self, batch: _Batch, stop: threading.Event) -> None:
        """Wait for the batch's write (or write, spool, hold it), record what InfluxDB refused, ack."""
        lines, n_data, origins, rejections = batch.lines, batch.n_data, batch.origins, batch.rejections
        started = batch.started
        report = self._write(lines, n_data, stop, batch.sent)
        spooled = report is None
        report = report or WriteReport()

        refused = [(i, detail) for i, detail in report.rejected.items() if i < n_data]
        unstorable = sum(1 for i in report.rejected if i >= n_data)
        if refused:
            late = [self._refused(origins[i], detail) for i, detail in refused]
            rejections.extend(late)
            unstorable += len(
                (self._write([self.builder.rejected(r) for r in late], 0, stop) or WriteReport()).rejected
            )
        if unstorable:
            # Only a bug, or someone writing `rejected` with other field types, gets here; say so loudly.
            log.error("ingest.rejected_record_unstorable", count=unstorable)

        for rej in rejections:
            self._count_rejection(rej)
        if spooled:
            self.stats.points_spooled += n_data
        else:
            self.stats.points_written += n_data - len(refused)
        self.stats.messages_acked += self.source.ack(batch.messages)
        self.stats.batches_written += 1
        self._in_hand -= len(batch.messages)
        if self._unacked:
            self._unacked.popleft()
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.last_batch_ms = elapsed_ms
        log.info(
            "ingest.batch_written",
            messages=len(batch.messages),
            points=n_data - len(refused),
            rejected=len(rejections),
            spooled=spooled,
            requests=report.requests,
            ms=round(elapsed_ms, 1),
        )

    @staticmethod
    def _refused(origin: _Origin, detail: str) -> Rejection:
        return Rejection(
            Reason.SINK_REJECTED,
            f"InfluxDB refused the point: {detail}"[:600],
            origin.message.topic,
            origin.message.payload,
            origin.message.received_ns,
            origin.unit_id,
        )

    def _count_rejection(self, rej: Rejection) -> None:
        self.stats.points_rejected += 1
        self.stats.rejected_by_reason[rej.reason.value] += 1
        if rej.reason.value not in self._warned:
            self._warned.add(rej.reason.value)
            log.warning(
                "ingest.message_rejected",
                reason=rej.reason.value,
                detail=rej.detail,
                topic=rej.topic[:200],
                note="first of its reason; later ones are counted silently",
            )
        else:
            log.debug(
                "ingest.message_rejected", reason=rej.reason.value, detail=rej.detail, topic=rej.topic[:200]
            )

    def _write(
        self,
        lines: list[str],
        n_data: int,
        stop: threading.Event,
        sent: Future[WriteReport] | None = None,
    ) -> WriteReport | None:
        """Write, or spool (None) when InfluxDB cannot take it; keep retrying only when the spool is full.

        ``n_data`` is how many of ``lines`` are telemetry (the rest are rejected records), kept in the
        spool so that replay counts and re-rejects them correctly. ``sent``: the first attempt, already
        under way in the writer thread; its outcome counts as this loop's first. Raises StoppedError if
        asked to stop while waiting with an unspooled batch.
        """
        while True:
            if sent is None and self.clock() < self._retry_at:
                if self._to_spool(lines, n_data):
                    return None
                # Held with the spool full: keep taking stats points meanwhile (kept until InfluxDB is
                # back), so the stored series shows this very state (issue 19).
                self._stats_if_due()
                if stop.wait(max(0.0, min(self._retry_at, self._next_stats) - self.clock())):
                    raise StoppedError
                continue
            try:
                if sent is not None:
                    first, sent = sent, None
                    report = first.result()
                else:
                    report = self.sink.write(lines)
            except SinkRetryableError as exc:
                self._failed(exc, len(lines))
                continue
            self._succeeded(report)
            return report

    def _to_spool(self, lines: list[str], n_data: int) -> bool:
        if self.spool is None:
            return False
        # Stats points waiting for InfluxDB ride along (after the data lines, so replay counts stay
        # right): on disk they survive a restart, and replay writes them with their original times.
        if self.spool.put([*lines, *self._stats_pending], n_data):
            self._stats_pending.clear()
            self.stats.batches_spooled += 1
            if self._spool_full:
                self._spool_full = False
                log.info("ingest.spool_accepting", bytes=self.spool.bytes)
            return True
        if not self._spool_full:
            self._spool_full = True
            log.warning(
                "ingest.spool_full",
                bytes=self.spool.bytes,
                max_bytes=self.spool.max_bytes,
                batches=self.spool.batches,
                note="acks stop; the broker holds further messages until InfluxDB takes writes again",
            )
        return False

    def _failed(self, exc: SinkRetryableError, n_lines: int) -> None:
        """Back off: nothing is sent to InfluxDB until ``_retry_at`` (Retry-After when the server says)."""
        self.stats.write_retries += 1
        wait = exc.retry_after if exc.retry_after is not None else self._delay
        self._retry_at = self.clock() + wait
        self._delay = min(self._delay * 2, self.buffer.retry_max_s)
        self._cannot_write(exc)
        if self._outage_since is None:
            self._outage_since = self.clock()
            log.warning(
                "ingest.write_failing",
                error=str(exc),
                wait_s=round(wait, 2),
                lines=n_lines,
                spool="on" if self.spool is not None else "off",
            )
        else:
            log.debug("ingest.write_retrying", error=str(exc), wait_s=round(wait, 2))

    def _cannot_write(self, exc: SinkError) -> None:
        where = "spooling to disk" if self.spool is not None else "holding messages in the broker"
        self._unwritable = f"cannot write to InfluxDB ({where}): {exc}"

    def health(self) -> str | None:
        """None while InfluxDB takes writes, else why not: the ingester's ``/healthz`` answers 503 with it.

        Set by any write that fails for a reason that retrying can cure (a batch, a replay, the counters)
        and cleared by the next write that succeeds. The counters are written every
        ``stats_interval_s`` even when no device reports, so an idle ingester notices a lost InfluxDB too.
        When the spool is full (acks stopped) the reason says so.
        """
        reason = self._unwritable
        if reason is not None and self._spool_full:
            reason += "; spool full: acks stopped, the broker holds new messages"
        return reason

    def _succeeded(self, report: WriteReport) -> None:
        self._unwritable = None
        self.stats.write_requests += report.requests
        self._delay = self.buffer.retry_initial_s
        self._retry_at = 0.0
        if self._spool_full:  # spool_full means "acks stopped"; they resume with this write
            self._spool_full = False
            log.info("ingest.acks_resumed")
        if self._outage_since is not None:
            log.info(
                "ingest.write_resumed",
                outage_s=round(self.clock() - self._outage_since, 1),
                spooled_batches=self.spool.batches if self.spool is not None else 0,
            )
            self._outage_since = None

    def replay(self, stop: threading.Event, budget_s: float) -> int:
        """Write spooled batches, oldest first, for about ``budget_s``; returns the batches replayed.

        A batch leaves the spool only after InfluxDB took it. Points InfluxDB refuses on replay (a field
        type conflict that appeared meanwhile) are recorded in ``rejected`` with the line as payload, since
        the original message is gone (it was acked when spooled).
        """
        if self.spool is None or not self.spool.batches or self.clock() < self._retry_at:
            return 0
        deadline = self.clock() + budget_s
        done = 0
        while not stop.is_set():
            segment = self.spool.peek()
            if segment is None:
                break
            try:
                report = self.sink.write(segment.lines)
            except SinkRetryableError as exc:
                self._failed(exc, len(segment.lines))
                break
            self._succeeded(report)
            refused = {i: d for i, d in report.rejected.items() if i < segment.n_data}
            if refused:
                now_ns = time.time_ns()
                rejs = [
                    Rejection(
                        Reason.SINK_REJECTED,
                        f"InfluxDB refused a spooled point (payload is its line protocol): {detail}"[:600],
                        "",
                        segment.lines[i].encode(),
                        now_ns,
                    )
                    for i, detail in refused.items()
                ]
                for rej in rejs:
                    self._count_rejection(rej)
                self._write([self.builder.rejected(r) for r in rejs], 0, stop)
            self.spool.remove(segment.seq)
            points = segment.n_data - len(refused)
            self.stats.points_written += points
            self.stats.points_replayed += points
            self.stats.batches_replayed += 1
            self._replayed.append((self.clock(), points))
            while self._replayed and self.clock() - self._replayed[0][0] > _RATE_WINDOW_S:
                self._replayed.popleft()
            done += 1
            if self.clock() >= deadline:
                break
        if done and not self.spool.batches:
            log.info("ingest.spool_drained", batches_replayed=self.stats.batches_replayed)
        return done

    def write_stats(self) -> None:
        """Store the counters in ``oxyfleet_ingest`` with the time they describe; never blocks ingestion.

        A point InfluxDB cannot take now is kept (in memory, and in the spool with the next spooled
        batch) and written later with its own time, so an outage shows in the stored series afterwards
        (issue 19). Nothing is sent while backing off: a throttling InfluxDB asked for quiet.
        """
        self._stats_pending.append(self.builder.stats(self.snapshot()))
        if self.clock() < self._retry_at:
            return
        try:
            self.sink.write(list(self._stats_pending))
        except SinkFatalError:
            raise
        except SinkError as exc:
            if isinstance(exc, SinkRetryableError):
                self._cannot_write(exc)
            log.debug("ingest.stats_not_written", error=str(exc), kept=len(self._stats_pending))
            return
        self._unwritable = None
        if len(self._stats_pending) > 1:
            log.info("ingest.stats_caught_up", points=len(self._stats_pending))
        self._stats_pending.clear()

    def keep_stats(self) -> None:
        """At stop during an outage: the points InfluxDB has not taken, and a last one, go to the spool."""
        if self.spool is None or not self._stats_pending:
            return
        self._stats_pending.append(self.builder.stats(self.snapshot()))
        if not self.spool.put(list(self._stats_pending), 0, headroom=_STATS_HEADROOM):
            log.warning("ingest.stats_lost", points=len(self._stats_pending), note="the spool has no room")
        self._stats_pending.clear()

    def snapshot(self) -> dict[str, int | float]:
        """Counters plus gauges of the moment."""
        self.stats.gauges["backlog"] = self.source.pending()
        self.stats.gauges["reconnects"] = self.source.reconnects
        subscribed = getattr(self.source, "subscribed", None)
        if subscribed is not None:
            self.stats.gauges["mqtt_subscribed"] = int(subscribed.is_set())
        self.stats.gauges["points_unregistered"] = self.builder.tags.unregistered
        try:
            oldest = self._unacked[0]  # read from the metrics thread: the pipeline may just pop it
        except IndexError:
            oldest = 0
        self.stats.gauges["oldest_unwritten_age_s"] = (
            round((time.time_ns() - oldest) / 1e9, 3) if oldest else 0.0
        )
        spool = self.spool
        self.stats.gauges["spool_batches"] = spool.batches if spool else 0
        self.stats.gauges["spool_bytes"] = spool.bytes if spool else 0
        self.stats.gauges["spool_max_bytes"] = spool.max_bytes if spool else 0
        self.stats.gauges["spool_oldest_age_s"] = round(spool.oldest_age_s(), 3) if spool else 0.0
        self.stats.gauges["spool_full"] = int(self._spool_full)
        self.stats.gauges["spool_corrupt"] = spool.corrupt if spool else 0
        self.stats.gauges["spool_replay_points_per_s"] = self._replay_rate()
        broker = getattr(self.source, "broker", None)
        if broker is not None:  # what the broker holds besides our inbox (-1: it does not say)
            self.stats.gauges["broker_stored_messages"] = broker.messages
            self.stats.gauges["broker_stored_bytes"] = broker.bytes
        self.stats.gauges["stats_pending"] = len(self._stats_pending)
        return self.stats.snapshot()

    def _replay_rate(self) -> float:
        """Points replayed per second over the last ``_RATE_WINDOW_S`` (read from any thread)."""
        now = self.clock()
        recent = tuple(self._replayed)  # only the pipeline thread mutates the deque
        points = sum(n for t, n in recent if now - t <= _RATE_WINDOW_S)
        return round(points / _RATE_WINDOW_S, 1)
