"""The numbers in written text and the matching rule: precision, units, signs, notation, what is skipped."""

from __future__ import annotations

import pytest

from sciagent.report.numbers import WrittenNumber, find_numbers, matches

MINUS, TIMES, EN_DASH = "\u2212", "\u00d7", "\u2013"


def _unmatched(text: str, allowed: list[float]) -> list[WrittenNumber]:
    """The numbers of ``text`` that match none of ``allowed`` under the rule."""
    return [number for number in find_numbers(text) if not matches(number, allowed)]


@pytest.mark.parametrize(
    ("written", "flagged"),
    [
        ("0.47", False),  # 0.4708 rounds to 0.47
        ("0.471", False),
        ("0.4708", False),
        ("0.5", False),
        ("0.48", True),  # 0.4708 rounds to 0.47, not 0.48
        ("0.4709", True),
        ("0.470", True),  # three decimals claim 0.470 ± 0.0005
        ("1", True),
        ("0.125", False),  # exact tie with 0.1245 written half-up ...
        ("0.124", False),  # ... or half-even: both pass
    ],
)
def test_a_number_matches_when_the_value_rounds_to_it(written: str, flagged: bool) -> None:
    assert bool(_unmatched(f"RMSD {written} Å", [0.4708, 0.1245])) is flagged


def test_units_percentages_and_thousands() -> None:
    allowed = [300.0, 0.9545, 1385.0, 0.05]
    assert _unmatched("300 K, 300K, 95%, 95.45 %, 1,385 steps/s, 5% tolerance", allowed) == []
    assert [n.text for n in _unmatched("96% and 1,386", allowed)] == ["96%", "1,386"]


def test_negative_numbers_and_signs() -> None:
    allowed = [-3682.65, -105.09]
    assert _unmatched(f"E = -3682.6 kJ/mol, Δ {MINUS}105.1 K, {MINUS}3683", allowed) == []
    flagged = _unmatched("3682.6 kJ/mol and +105.1 K", allowed)
    assert [n.value for n in flagged] == [3682.6, 105.1]  # signs are checked here; study_values adds |v|


def test_scientific_notation_counts_decimals_of_the_mantissa() -> None:
    allowed = [0.00039999999999999996, 582.96]
    numbers = find_numbers(f"4.0e-4 ns, 4e-4, 5.8{TIMES}10^2, 5.83 {TIMES} 10², 1.2E+03")
    assert [(n.value, n.decimals) for n in numbers[:3]] == [
        (pytest.approx(4e-4), 5),
        (pytest.approx(4e-4), 4),
        (pytest.approx(580.0), -1),
    ]
    assert [
        n.text for n in _unmatched(f"4.0e-4 ns, 4e-4, 5.8{TIMES}10^2, 5.83 {TIMES} 10², 1.2E+03", allowed)
    ] == ["1.2E+03"]


def test_ranges_are_two_numbers() -> None:
    for text in (f"1.2{EN_DASH}1.5 Å", "1.2-1.5 Å", "1.2 to 1.5 Å", "between 1.2 and 1.5"):
        assert [n.value for n in find_numbers(text)] == [1.2, 1.5], text
    assert [n.text for n in _unmatched(f"RMSD 1.2{EN_DASH}1.6 Å", [1.2, 1.5])] == ["1.6"]


def test_identifiers_versions_and_list_markers_are_not_checked() -> None:
    text = "1. T300-r1 in H2O with OpenMM 8.6.1\n2) the rest\n  3. item\nfootnote[^1]"
    assert find_numbers(text) == []


def test_small_integers_are_checked_too() -> None:
    text = "3 conditions, 2 completed, 4 replicas"
    assert len(find_numbers(text)) == 3 and [n.text for n in _unmatched(text, [3.0, 2.0])] == ["4"]


def test_a_number_beyond_a_floats_range_is_not_checkable_and_does_not_raise() -> None:
    """A sandbox scratch name such as ``call-4e999b`` reads as 4 x 10^999 (it raised OverflowError and
    ended a session whose tool result held one)."""
    assert [n.value for n in find_numbers("scratch call-4e999 held 3 files")] == [3]
