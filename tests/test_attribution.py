"""Attribution of written numbers: sentences, the conditions and quantities each names, and the check.

The pool here is built by hand (values as a study of 300 K and 400 K would hold them), so each rule can
be seen on its own; tests/test_report.py runs the same check on a record of real runs.
"""

from __future__ import annotations

import pytest

from sciagent.report.attribution import check_text, mentions, sentence_spans
from sciagent.report.metrics import metrics_in_text, metrics_of_field
from sciagent.report.values import ConditionName, Value, ValuePool


def _value(value: float, field: str, condition: str | None) -> Value:
    return Value(value, field, condition, metrics_of_field(field) if condition else frozenset())


POOL = ValuePool(
    values=(
        _value(1.234, "final_window_rmsd_mean_angstrom", "T300-r1"),
        _value(0.912, "ss_retention", "T300-r1"),
        _value(0.9357, "rg_mean_nm", "T300-r1"),
        _value(301.2, "mean_temperature_k", "T300-r1"),
        _value(2.0, "replica", "T300-r1"),  # a field that names no quantity
        _value(4.567, "final_window_rmsd_mean_angstrom", "T400-r1"),
        _value(0.551, "ss_retention", "T400-r1"),
        _value(4.567, "final_window_rmsd_mean_angstrom", "T400-r2"),
        _value(2.0, "count", None),
        _value(300.0, "temperature_k", None),
        _value(400.0, "temperature_k", None),
        _value(3.0, "thresholds.rmsd_stable_max_angstrom", None),
    ),
    conditions=(
        ConditionName("T300-r1", 300.0),
        ConditionName("T400-r1", 400.0),
        ConditionName("T400-r2", 400.0),
    ),
    reference_k=300.0,
)


def _sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in sentence_spans(text)]


def test_sentences_split_at_ends_blank_lines_and_list_items_not_at_decimals() -> None:
    text = "RMSD was 1.234 Å, e.g. at the end. Then 4.567 Å!\n\nNext paragraph\n- item one\n- item 2.5 two"
    assert _sentences(text) == [
        "RMSD was 1.234 Å, e.g. at the end.",
        "Then 4.567 Å!",
        "Next paragraph",
        "- item one",
        "- item 2.5 two",
    ]


@pytest.mark.parametrize(
    ("sentence", "named"),
    [
        ("T300-r1 kept its fold.", ("T300-r1",)),
        ("T400-r2 lost it.", ("T400-r2",)),  # the name only, not its sibling replica
        ("At 300 K it held.", ("T300-r1",)),
        ("At 400K both replicas unfolded.", ("T400-r1", "T400-r2")),
        ("The 400-K runs unfolded.", ("T400-r1", "T400-r2")),
        ("Between 300 and 400 K the fold melted.", ("T300-r1", "T400-r1", "T400-r2")),
        ("At 400 K (T400-r1) it unfolded.", ("T400-r1",)),
        ("Runs at 300 were calm.", ("T300-r1",)),
        ("T400 unfolded.", ("T400-r1", "T400-r2")),
        ("The reference held.", ("T300-r1",)),
        ("The elevated temperatures unfolded it.", ("T400-r1", "T400-r2")),
        ("The RMSD from the reference structure rose.", ()),  # a structure, not a condition
        ("The mean was 301.2 K at 2 fs.", ()),  # no simulated temperature
        ("It reached 4.567 Å at 0.5 ns.", ()),
    ],
)
def test_conditions_named(sentence: str, named: tuple[str, ...]) -> None:
    assert mentions(sentence, POOL)[0] == named


def test_the_words_that_named_a_condition_are_not_read_as_a_quantity() -> None:
    _, rest = mentions("At 300 K (T300-r1) the mean was 301.2 K.", POOL)
    assert "300 K" not in rest and "T300-r1" not in rest and "301.2 K" in rest


def test_metrics_by_word_and_by_unit() -> None:
    assert metrics_in_text("the backbone RMSD was 1.2 Å") == {"RMSD"}  # not RMSF: the word decides
    assert metrics_in_text("it moved 1.2 Å") == {"RMSD", "RMSF"}  # the unit alone: either
    both = {"secondary structure", "radius of gyration"}
    assert metrics_in_text("helix retention 0.9 and Rg 0.94 nm") == both
    assert metrics_in_text("E_pot drift 4e5 kJ/mol/ns") == {"energy", "drift"}
    assert metrics_in_text("a mean of 301 K") == {"temperature"}
    assert metrics_of_field("analysis.potential_energy_kj_mol.drift_per_ns") == {"energy", "drift"}
    assert metrics_of_field("timestep_fs") == {"timestep"}  # not "steps"
    assert metrics_of_field("production_steps") == {"steps"}


def _flags(text: str) -> list[str]:
    return [flag.reason for flag in check_text(text, POOL).flagged]


def test_a_number_must_be_a_value_of_the_named_condition_and_metric() -> None:
    assert _flags("At 300 K the backbone RMSD was 1.234 Å.") == []
    assert _flags("At 400 K the backbone RMSD was 1.234 Å.") == [
        "1.234 matches no RMSD value of T400-r1 or T400-r2; nearest 4.567"
    ]
    assert _flags("T300-r1 had a secondary-structure retention of 1.234.") == [
        "1.234 matches no secondary structure value of T300-r1; nearest 0.912"
    ]
    assert _flags("The RMSD at 300 K was 1.2 Å while T400-r1 retained 55% of its helix.") == []


def test_what_a_sentence_leaves_open_is_open() -> None:
    assert _flags("The lowest backbone RMSD was 1.234 Å.") == []  # no condition: any condition's RMSD
    assert _flags("At 300 K the values were 1.234, 0.912 and 301.2.") == []  # no quantity: any of T300-r1
    assert _flags("Of all numbers, 0.551 stands out.") == []  # neither: any value of the study
    assert _flags("T300-r1 was replica 2 with an RMSD of 1.234 Å.") == []  # an unclassified value of T300-r1


def test_study_values_are_allowed_everywhere() -> None:
    assert _flags("At 400 K the backbone RMSD was above the 3 Å limit, in 2 runs.") == []


def test_differences_need_both_conditions_named() -> None:
    assert _flags("At 400 K (T400-r1) the RMSD was 3.333 Å higher than at 300 K.") == []
    assert _flags("At 400 K (T400-r1) the RMSD was 3.333 Å higher.") == [
        "3.333 matches no RMSD value of T400-r1; nearest 4.567"
    ]


def test_a_condition_without_the_value_says_so() -> None:
    values = (*POOL.values, _value(450.0, "temperature_k", None))
    pool = ValuePool(values, (*POOL.conditions, ConditionName("T450-r1", 450.0)), 300.0)
    [flag] = check_text("At 450 K the backbone RMSD was 7.89 Å.", pool).flagged
    assert flag.reason == "7.89: there is no RMSD value of T450-r1 to match" and flag.nearest is None


def test_the_check_counts_what_it_checked_and_attributed() -> None:
    check = check_text("At 300 K the RMSD was 1.234 Å. At 400 K it was 9.9 Å. Done.", POOL)
    assert (check.checked, check.attributed, len(check.flagged)) == (4, 1, 1)
    summary = "4 numbers checked against the condition and metric each sentence names; 1 flagged."
    assert check.summary() == summary
