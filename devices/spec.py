"""Names shared by devices, the ingester and the dashboards.

The MQTT topic grammar, the device kinds and the InfluxDB measurement names live here, once, so the
ingester, the simulator and the dashboards cannot drift apart on spelling.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

__all__ = [
    "KINDS",
    "LATE_AFTER_MS",
    "MEASUREMENT_LATE_DATA",
    "MEASUREMENT_REJECTED",
    "MEASUREMENT_STATS",
    "MEASUREMENT_TELEMETRY",
    "MEASUREMENT_UNIT_CONNECTION",
    "UNIT_ID_PATTERN",
    "UNIT_ID_RE",
    "UNREGISTERED",
    "Channel",
    "Kind",
    "topic_for",
]

Kind = Literal["concentrator", "docs"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)

Channel = Literal["telemetry", "status"]

UNIT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# fullmatch, not match: "$" would accept a trailing newline, and a newline must never reach a tag.
UNIT_ID_RE: Final = re.compile(UNIT_ID_PATTERN[1:-1])

MEASUREMENT_TELEMETRY: Final = "telemetry"
MEASUREMENT_REJECTED: Final = "rejected"
MEASUREMENT_UNIT_CONNECTION: Final = "unit_connection"
MEASUREMENT_STATS: Final = "oxyfleet_ingest"
# Written by the ingester when a message carries readings older than LATE_AFTER_MS (a late upload), so the
# health engine knows which unit and time range to re-evaluate without scanning history.
MEASUREMENT_LATE_DATA: Final = "late_data"
LATE_AFTER_MS: Final = 30_000

# Tag value for units that are not in the inventory (the inventory arrives with the devices issue).
UNREGISTERED: Final = "unregistered"


def topic_for(kind: str, unit_id: str, channel: Channel = "telemetry", prefix: str = "oxygen") -> str:
    """Build a device topic; the one place the topic layout is written down for publishers."""
    return f"{prefix}/{kind}/{unit_id}/{channel}"
