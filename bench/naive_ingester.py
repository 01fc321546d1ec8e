"""A naive ingester, as a quick script would be written: paho -> pydantic -> InfluxDB ``/write``.

A peer for the benchmark, not a model: paho acknowledges each QoS 1 message when it arrives, before the
reading is written, so a crash or an InfluxDB outage loses whatever is buffered (not loss-safe); no
spool, no dead letters, no rejection reasons, a bad message is only counted. Batches: 5,000 lines or
200 ms, whichever comes first (the same as the Node-RED flow). Config from the environment.
"""

from __future__ import annotations

import os
import threading
import time

import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ValidationError

BATCH, AGE_S = 5000, 0.2


class Reading(BaseModel):
    """One concentrator reading."""

    ts: int
    seq: int
    purity_pct: float
    flow_lpm: float
    setpoint_lpm: float
    outlet_kpa: float
    temp_c: float
    running: bool
    power: str


lines: list[str] = []
lock = threading.Lock()
bad = 0


def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
    """Validate, build a line, buffer it."""
    global bad  # noqa: PLW0603 - a script's one counter
    try:
        r = Reading.model_validate_json(msg.payload)
    except ValidationError:
        bad += 1
        return
    unit = msg.topic.split("/")[-2]
    line = (
        f"telemetry,unit_id={unit} purity_pct={r.purity_pct},flow_lpm={r.flow_lpm},"
        f"setpoint_lpm={r.setpoint_lpm},outlet_kpa={r.outlet_kpa},temp_c={r.temp_c},"
        f'running={str(r.running).lower()},power="{r.power}",seq={r.seq}i {r.ts}'
    )
    with lock:
        lines.append(line)


def main() -> None:
    """Subscribe, then write a batch whenever it is full or old enough."""
    global lines
    env = os.environ
    url = f"{env['BENCH_INFLUX_URL']}/write?db={env['BENCH_INFLUX_DB']}&precision=ms"
    http = urllib3.PoolManager()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"naive-{os.getpid()}")
    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(env["BENCH_TOPIC"], qos=1)
    client.connect(env.get("BENCH_MQTT_HOST", "127.0.0.1"), int(env["BENCH_MQTT_PORT"]))
    client.loop_start()
    oldest = time.monotonic()
    while True:
        time.sleep(0.01)
        with lock:
            if not lines or (len(lines) < BATCH and time.monotonic() - oldest < AGE_S):
                if not lines:
                    oldest = time.monotonic()
                continue
            batch, lines = lines, []
        oldest = time.monotonic()
        resp = http.request("POST", url, body="\n".join(batch).encode())
        if resp.status != 204:
            print(f"write failed: {resp.status} {resp.data[:200]!r}", flush=True)


if __name__ == "__main__":
    main()
