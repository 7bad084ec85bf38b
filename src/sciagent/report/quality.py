"""Tell a usable model-written text from a degenerate one, and say why it was set aside.

Small models fail in recognisable ways: SmolLM2-135M wrote the word ``false`` as a plan rationale, and
a decoder stuck in a loop writes one sentence five times. Such a text passes its schema (it is a
string) but is not a reading of anything, so the report does not show it as one: it says why, shows
what sciagent computed instead, and keeps the text in an appendix. The tests, in order:

- **trivially short**: fewer words than the text's purpose needs (``INTERPRETATION_MIN_WORDS`` for an
  interpretation of a results table, ``RATIONALE_MIN_WORDS`` for a plan's rationale);
- **a loop**: one sentence (compared without case, spacing or punctuation) ``REPEATS`` times or more,
  or, for a loop without sentence ends, a run of ``PHRASE_WORDS`` words ``REPEATS`` times or more;
- **about nothing measured** (interpretations only, decided by the caller from the number check):
  not one number that matches a value of the conditions its sentence names.
"""

from __future__ import annotations

import re
from collections import Counter

from sciagent.report.attribution import NumberCheck, sentence_spans

# An interpretation of a results table names at least a condition, a quantity and a value, in a
# sentence; fewer than a dozen words cannot do that for even one condition.
INTERPRETATION_MIN_WORDS = 12
# "Bracket the melting range" is a rationale; "false", "yes" or "n/a" are not.
RATIONALE_MIN_WORDS = 3
# Saying something twice can be emphasis; three times the same is a decoder loop.
REPEATS = 3
# Twelve identical words in a row are not a coincidence of phrasing, even in a templated list.
PHRASE_WORDS = 12
_QUOTE_LIMIT = 120


def degeneracy(text: str, min_words: int) -> str | None:
    """Why ``text`` is degenerate, as a phrase after "the model's ...", or None if it is usable.

    E.g. "repeated one sentence 5 times ('...')" or "is trivially short, 1 word".
    """
    words = _words(text)
    if not words:
        return "is empty"
    if len(words) < min_words:
        return f"is trivially short, {len(words)} word{'' if len(words) == 1 else 's'}"
    sentences = Counter(" ".join(_words(text[start:end])) for start, end in sentence_spans(text))
    sentence, times = sentences.most_common(1)[0]
    if times >= REPEATS:
        return f"repeated one sentence {times} times ({quoted(sentence)})"
    phrases = Counter(" ".join(words[i : i + PHRASE_WORDS]) for i in range(len(words) - PHRASE_WORDS + 1))
    if phrases:
        phrase, times = phrases.most_common(1)[0]
        if times >= REPEATS:
            return f"repeated the phrase {quoted(phrase)} {times} times"
    return None


def interpretation_degeneracy(text: str, check: NumberCheck) -> str | None:
    """Why a model's interpretation is set aside (``degeneracy``, or it cites no computed value)."""
    reason = degeneracy(text, INTERPRETATION_MIN_WORDS)
    if reason is None and check.attributed == 0:
        reason = "cites no value computed in the study"
    return reason


def quoted(text: str) -> str:
    """``text`` on one line in single quotes, cut at ``_QUOTE_LIMIT`` characters."""
    flat = " ".join(text.split())
    return f"'{flat if len(flat) <= _QUOTE_LIMIT else flat[: _QUOTE_LIMIT - 1] + '…'}'"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
