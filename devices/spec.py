"""Names shared by devices, the ingester and the simulator: the MQTT topic grammar and the device kinds.

They live here, once, so firmware, the ingester and the simulator cannot drift apart on spelling. What is
stored in InfluxDB is named in :mod:`store.schema`.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

__all__ = [
    "KINDS",
    "UNIT_ID_PATTERN",
    "UNIT_ID_RE",
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


def topic_for(kind: str, unit_id: str, channel: Channel = "telemetry", prefix: str = "oxygen") -> str:
    """Build a device topic; the one place the topic layout is written down for publishers."""
    return f"{prefix}/{kind}/{unit_id}/{channel}"
