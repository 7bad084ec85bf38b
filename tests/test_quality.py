"""Degenerate model text: loops, non-answers and text about nothing measured are told from usable text."""

from __future__ import annotations

from sciagent.report.attribution import NumberCheck
from sciagent.report.quality import (
    INTERPRETATION_MIN_WORDS,
    RATIONALE_MIN_WORDS,
    degeneracy,
    interpretation_degeneracy,
)

USABLE = (
    "At 300 K the backbone RMSD settled at 1.2 Å and the helices stayed, while at 400 K the RMSD "
    "reached 4.5 Å and half of the helical residues unwound, so the fold melts between the two."
)


def test_a_usable_text_passes() -> None:
    assert degeneracy(USABLE, INTERPRETATION_MIN_WORDS) is None
    assert degeneracy("Bracket the melting range.", RATIONALE_MIN_WORDS) is None


def test_what_smollm2_wrote_as_a_rationale_is_trivially_short() -> None:
    assert degeneracy("false", RATIONALE_MIN_WORDS) == "is trivially short, 1 word"
    assert degeneracy("  ", RATIONALE_MIN_WORDS) == "is empty"
    assert degeneracy("Looks stable.", INTERPRETATION_MIN_WORDS) == "is trivially short, 2 words"


def test_a_sentence_repeated_is_a_loop() -> None:
    text = "The protein is stable. " * 5 + "The end came at 300 K."
    assert degeneracy(text, INTERPRETATION_MIN_WORDS) == (
        "repeated one sentence 5 times ('the protein is stable')"
    )
    twice = "The protein is stable at 300 K. The protein is stable at 300 K. " + USABLE
    assert degeneracy(twice, INTERPRETATION_MIN_WORDS) is None  # twice can be emphasis


def test_a_loop_without_sentence_ends_is_caught_by_its_phrase() -> None:
    phrase = "and the protein remained folded throughout the simulation at all of the temperatures"
    reason = degeneracy(" ".join([phrase] * 3), INTERPRETATION_MIN_WORDS)
    assert reason is not None and reason.startswith("repeated the phrase '") and reason.endswith(" 3 times")


def test_an_interpretation_that_cites_no_computed_value_is_set_aside() -> None:
    nothing = NumberCheck(checked=2, attributed=0, flagged=[])
    something = NumberCheck(checked=2, attributed=1, flagged=[])
    assert interpretation_degeneracy(USABLE, nothing) == "cites no value computed in the study"
    assert interpretation_degeneracy(USABLE, something) is None
    assert interpretation_degeneracy("false", something) == "is trivially short, 1 word"
