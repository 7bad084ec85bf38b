"""Durations as people type them."""

from __future__ import annotations

import pytest

from sciagent.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("300s", 300), ("5m", 300), ("1h30m", 5400), (" 2 m ", 120)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "five minutes", "5x", "0", "-5m", "m"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
