"""What goes into a log line from outside (an MQTT payload or field, a file name, a packet's contents) is clipped: a
1 MB field must not become a 1 MB log line."""

from __future__ import annotations

LIMIT = 200


def clip(value: object, limit: int = LIMIT) -> str:
    """`value` as text (str() of it), at most `limit` characters plus a note of how much was cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
