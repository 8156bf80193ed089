"""Numbers and durations as operators type them: ASCII digits only, finite, no sign.

Kept apart from ``config`` so that the policy-file loader and the CLI can read
durations without importing the settings (no import cycle)."""

from __future__ import annotations

import math
import re

from regcleaner.errors import ConfigError

__all__ = ["parse_count", "parse_duration", "parse_number"]

_ASCII_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "duration") -> float:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` → seconds (ASCII digits only;
    no sign, no ``nan`` or ``inf``)."""
    value = text.strip().lower()
    if not value:
        raise ConfigError(f"{option}: empty duration")
    if _ASCII_NUMBER.fullmatch(value):
        return _finite(float(value), option, text)
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ConfigError(
            f"{option}: invalid duration {text!r}: use a number of seconds or e.g. 30m, 1h30m, 7d"
        )
    return _finite(total, option, text)


def _finite(value: float, option: str, text: str) -> float:
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {text!r} is too large")
    return value


def parse_number(text: str | float, option: str, *, minimum: float = 0.0,
                 positive: bool = False) -> float:  # fmt: skip
    """A finite decimal number in ASCII digits, at least ``minimum`` (above 0 when
    ``positive``); ConfigError naming the option otherwise."""
    value_text = str(text).strip()
    if not _ASCII_NUMBER.fullmatch(value_text):
        raise ConfigError(
            f"{option} must be a number in plain digits (like 2 or 0.5), not {value_text!r}"
        )
    value = _finite(float(value_text), option, value_text)
    if value < minimum or (positive and value <= 0):
        bound = "above 0" if positive else f"at least {minimum:g}"
        raise ConfigError(f"{option} must be {bound}, not {value_text}")
    return value


def parse_count(text: str | int, option: str, *, minimum: int = 1) -> int:
    """A whole number in ASCII digits, at least ``minimum``."""
    value_text = str(text).strip()
    if not re.fullmatch(r"[0-9]+", value_text) or len(value_text) > 9:
        raise ConfigError(f"{option} must be a whole number in plain digits, not {value_text!r}")
    value = int(value_text)
    if value < minimum:
        raise ConfigError(f"{option} must be at least {minimum}, not {value}")
    return value
