"""What in the catalogue and in the session's results a question is about, by its words.

The planner (``sciagent.agent.planner``) offers a small model a handful of tools and a handful of
result fields instead of everything; this module chooses them, deterministically: words are lower-cased
and crudely stemmed (``residues`` and ``residue`` agree), tools are ranked by BM25 over their name,
description and argument names, result fields by the share of their own words the question has. No
embeddings: it has to run offline, instantly, and say the same thing every time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sciagent.agent.observations import ResultField, result_fields
from sciagent.agent.stated import stated_values
from sciagent.agent.steps import ToolCallRecord
from sciagent.tools.registry import Tool, ToolRegistry

RELEVANT = 0.5  # a tool is offered when it matches the question (or a clause) this well against the best
CLAUSE_WORDS = 3  # a shorter part ("at pH 8", "(Structure: villin)") says what, not which tool
MOST_FIELDS = 8  # result fields offered for the answer
_WORD = re.compile(r"[a-z0-9]+")
_CLAUSE = re.compile(r"[,;?!\n]|\.\s")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_IRREGULAR = {"helices": "helix", "helical": "helix"}  # what a suffix rule cannot join
_STOP = frozenset(  # words every question has: matching them says nothing about a tool
    re.findall(
        r"\w+",
        "a an and are as at be by can could did do does for from had has have how i in into is it its many "
        "me much my of on or our should than that the their them then these this those to was were what "
        "when where which who why will with would you your",
    )
)


def relevant_tools(question: str, tools: Sequence[Tool]) -> list[Tool]:
    """The tools that match the question, or a part of it (a clause of at least ``CLAUSE_WORDS``
    words), at least ``RELEVANT`` as well as the tool that matches it best (BM25), in the order of
    their match with the whole question.

    Parts, because one question asks several things: "did its secondary structure change, and what
    was its mean solvent-accessible surface area?" matches ``sasa`` twice as well as
    ``secondary_structure``, and both are needed.
    """
    documents = [words(tool_words(tool)) for tool in tools]
    clauses = [part for part in _CLAUSE.split(question) if len(words(part)) >= CLAUSE_WORDS]
    chosen: set[str] = set()
    for part in [question, *clauses]:
        scores = bm25(words(part), documents)
        best = max(scores, default=0.0)
        chosen |= {
            tool.name for tool, score in zip(tools, scores, strict=True) if 0 < best * RELEVANT <= score
        }
    overall = bm25(words(question), documents)
    ranked = sorted(zip(overall, tools, strict=True), key=lambda pair: -pair[0])
    return [tool for _, tool in ranked if tool.name in chosen]


def answer_fields(question: str, records: Sequence[ToolCallRecord], tools: ToolRegistry) -> list[ResultField]:
    """The ``MOST_FIELDS`` result fields closest to the question, from the latest successful result of
    each tool: only those sharing a word with it when any does (else every field), each scored by the
    share of its own words the question has (``number of chains``: 1/2) plus half its tool's relevance
    (how well the tool's name and description match the question, against the best: ``sasa`` for
    "solvent-accessible surface area"); ties go to the later result."""
    latest = _latest_results(records)
    fields = session_fields(records)
    if not fields:
        return []
    asked = words(question)
    known = [name for name in latest if name in tools]
    relevance = dict(zip(known, bm25(asked, [words(tool_words(tools.get(n))) for n in known]), strict=True))
    best = max(relevance.values(), default=0.0) or 1.0
    scores = []
    for f in fields:
        own = set(words(f.words))
        shared = len(own & set(asked)) / len(own) if own else 0.0
        scores.append((shared > 0, shared + 0.5 * relevance.get(f.key.split(".")[0], 0.0) / best))
    ranked = sorted(range(len(fields)), key=lambda index: scores[index], reverse=True)
    sharing = [index for index in ranked if scores[index][0]] or ranked
    return [fields[index] for index in sharing[:MOST_FIELDS]]


def _latest_results(records: Sequence[ToolCallRecord]) -> dict[str, dict[str, Any]]:
    """Each tool's latest successful result, oldest tool first."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.status == "ok" and isinstance(record.result, dict):
            latest.pop(record.tool, None)
            latest[record.tool] = record.result
    return latest


def session_fields(records: Sequence[ToolCallRecord]) -> list[ResultField]:
    """Every quotable field of each tool's latest successful result, the latest tool first."""
    latest = _latest_results(records)
    return [f for tool, result in reversed(latest.items()) for f in result_fields(tool, result)]


def named_fields(question: str, fields: Sequence[ResultField], recency: Sequence[str]) -> list[ResultField]:
    """The fields the question names by a word of their own, deterministically, as stated arguments are.

    For each content word of the question (not ``structure``, which every question about one has, nor
    the structure's own name), the field it fits best among those whose words hold it: the whole rather
    than a part (the shallowest path: ``total_atoms`` before ``chains.0.atoms`` or a prepared file's
    ``record.atoms``), then of the tool that answered last (``recency``, oldest first), then the one the
    question names most of; with its
    siblings that differ only by a list index (each run's RMSF in a comparison). A count sciagent made
    (``number of chains``, a list's length) is never added: no result states it, and it counts
    whatever the list holds (water chains too).
    """
    generic = {"structure", "structur", *(_stem(name.lower()) for name in stated_values(question).structures)}
    order = {tool: rank for rank, tool in enumerate(recency)}
    asked = set(words(question)) - generic
    named: list[ResultField] = []
    for word in dict.fromkeys(words(question)):
        holding = [
            f for f in fields if word in words(f.words) and word not in generic and not _counted(f)
        ]
        if not holding:
            continue
        best = min(holding, key=lambda f: (_depth(f), -order.get(_tool(f), -1), -_share(f, asked)))
        pattern = re.sub(r"\.\d+\.", ".#.", best.key)
        named += [f for f in fields if re.sub(r"\.\d+\.", ".#.", f.key) == pattern and f not in named]
    return named


def _counted(result_field: ResultField) -> bool:
    return result_field.label.startswith("number of ")


def _tool(result_field: ResultField) -> str:
    return result_field.key.split(".")[0]


def _depth(result_field: ResultField) -> int:
    return result_field.key.count(".")


def _share(result_field: ResultField, asked: set[str]) -> float:
    own = set(words(result_field.words))
    return len(own & asked) / len(own) if own else 0.0


def field_names(fields: list[ResultField]) -> list[str]:
    """What a model picks fields by: each field's label, with its tool where two tools share a label,
    and a word (never a digit: it would be a number in the answer) for a label that repeats in one."""
    counts = Counter(f.label for f in fields)
    names = [f.label if counts[f.label] == 1 else f"{f.key.split('.')[0]} {f.label}" for f in fields]
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        ordinal = _ORDINALS[min(seen[name], len(_ORDINALS)) - 1]
        unique.append(name if seen[name] == 1 else f"{name}, {ordinal}")
    return unique


def tool_words(tool: Tool) -> str:
    """What a tool is about: its name, description and argument names."""
    arguments = " ".join(tool.parameters().get("properties", {}))
    return f"{tool.name.replace('_', ' ')} {tool.description} {arguments}"


def words(text: str) -> list[str]:
    """``text``'s content words, lower case and crudely stemmed (``residues`` and ``residue`` agree)."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if len(word) > 1 and word not in _STOP]


def bm25(query: list[str], documents: list[list[str]]) -> list[float]:
    """Okapi BM25 (k1 = 1.2, b = 0.75) of each document for the query's words."""
    if not documents:
        return []
    frequency = Counter(word for document in documents for word in set(document))
    average = sum(map(len, documents)) / len(documents) or 1.0
    scores = []
    for document in documents:
        counts, score = Counter(document), 0.0
        for word in set(query):
            if counts[word]:
                idf = math.log(1 + (len(documents) - frequency[word] + 0.5) / (frequency[word] + 0.5))
                norm = 1.2 * (0.25 + 0.75 * len(document) / average)
                score += idf * counts[word] * 2.2 / (counts[word] + norm)
        scores.append(score)
    return scores


def _stem(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    for suffix in ("ies", "ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word
