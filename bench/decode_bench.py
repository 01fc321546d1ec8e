"""Micro-benchmark of the decoder alone (topic + bytes -> readings/rejections): the hot path's own cost.

Run in its own process, with nothing else of oxyfleet loaded, so the figure is the decoder's and not the
MQTT client's: ``.venv/bin/python bench/decode_bench.py`` (best of ``--repeat`` runs of ``--number``
decodes per payload kind, microseconds of CPU per message). Compare two versions side by side in the same
run, e.g. ``PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/decode_bench.py`` alternated with
this checkout's, several rounds each.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import timeit

from ingest.decode import Decoder, Inbound

NOW_MS = 1764140400000
TOPIC = "oxygen/concentrator/OC-JKT-00001/telemetry"
READING = {
    "ts": NOW_MS,
    "seq": 12345,
    "purity_pct": 93.4,
    "flow_lpm": 5.01,
    "setpoint_lpm": 5.0,
    "outlet_kpa": 62.5,
    "temp_c": 31.2,
    "run_hours": 10234.5,
    "power": "mains",
    "running": True,
    "alarms": [],
}
PAYLOADS = {
    "epoch_ms": json.dumps(READING).encode(),
    "rfc3339": json.dumps({**READING, "ts": "2025-11-26T14:00:00.123+07:00"}).encode(),
    "batch_100_per_reading": json.dumps(
        {"readings": [{**READING, "ts": NOW_MS - i * 10_000, "seq": i} for i in range(100)]}
    ).encode(),
    "rejected_out_of_range": json.dumps({**READING, "purity_pct": 140}).encode(),
    "rejected_nan": json.dumps({**READING, "purity_pct": float("nan")}).encode(),
    "rejected_duplicate_key": json.dumps(READING).encode()[:-1] + b', "purity_pct": 12}',
}


def main() -> None:
    """Print µs per decoded message for each payload kind."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    decoder = Decoder()
    for name, payload in PAYLOADS.items():
        msg = Inbound(TOPIC, payload, NOW_MS * 1_000_000)
        out = decoder.decode(msg)
        assert out.readings or out.rejections
        number = args.number // 100 if name.startswith("batch") else args.number
        run = functools.partial(decoder.decode, msg)
        # CPU time of this process, not wall time: the machine is shared, and a descheduled process
        # would otherwise be billed for its neighbours' work.
        best = min(timeit.repeat(run, number=number, repeat=args.repeat, timer=time.process_time))
        per = best / number * 1e6
        if name.startswith("batch"):
            per /= 100
        print(f"{name:24s} {per:7.2f} µs")


if __name__ == "__main__":
    main()
