"""Approval by effect: whether a tool call runs, asks someone first, or is refused.

One policy for every front end (the agent loop, the MCP server, ``sciagent approve``, later the web
UI), decided from what a call *does*, never from what it costs: reading, computing here and writing in
the session run; spending an allocation, destroying (cancel, hold, remove), running model-written code
and reaching outside ask. A tool that ``runs_on_site`` spends an allocation when its site is a batch
site (Parsl on PBS Pro / Slurm, a Globus Compute endpoint).

Rules (``[[approval.rules]]`` in the user's ``sciagent.toml``) come first, in order, then the built-in
rules, then the defaults by effect. Each effect of a call is decided by the first rule that covers
it; the call gets the strictest of its effects' decisions (deny > ask > allow). A rule that bounds a
job (``queue``, ``max_nodes``, ``max_walltime``) covers only calls whose preview states those facts
within the bounds, so "allow debug jobs up to 1 node and 30 minutes" never allows a job of unknown
size. ``--approve-all`` (``approve_all``) turns every *ask* into *allow*; a *deny* stays a deny.

Who answers an *ask* is not decided here: an ``Answerer`` (the journal's approval desk, with the
terminal or ``sciagent approve`` behind it) gets the ``ApprovalRequest``, which carries what the person
must see (the job script, the generated code) in its preview.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from sciagent.compute.sites import SiteConfig, resolve_site
from sciagent.config import ApprovalDecision, ApprovalRule, Effect, Settings
from sciagent.errors import ConfigError
from sciagent.tools.registry import CallPreview, Tool, ToolContext

# What happens to an effect no rule covers. Only what changes nothing outside the session runs unasked.
DEFAULT_DECISIONS: Mapping[str, ApprovalDecision] = {
    "reads": "allow",
    "computes": "allow",
    "writes": "allow",
    "spends": "ask",
    "destroys": "ask",
    "runs_code": "ask",
    "reaches_outside": "ask",
}
# Built-in rules after the user's: fetching a structure or a molecule by name reaches only the services
# named in settings (RCSB, PubChem) with a validated id or name, nothing the model composes freely.
BUILTIN_RULES: tuple[ApprovalRule, ...] = (
    ApprovalRule(tool="fetch_structure", effect="reaches_outside", decision="allow"),
    ApprovalRule(tool="chem_energy", effect="reaches_outside", decision="allow"),
)
# Effects whose tools an MCP server does not serve unless told to (``mcp serve --allow-tool``, or an
# allow rule naming the tool): the server has no terminal of its own to ask.
NOT_SERVED_BY_DEFAULT = frozenset({"spends", "destroys", "runs_code"})
_STRICTNESS = {"allow": 0, "ask": 1, "deny": 2}


@dataclass(frozen=True)
class ApprovalRequest:
    """One call as the policy saw it: what it does, what was decided and why, what to show."""

    tool: str
    arguments: dict[str, Any]
    effects: frozenset[Effect]
    decision: ApprovalDecision
    reason: str
    preview: CallPreview
    call_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request as the journal keeps it (and ``sciagent approve`` and the web UI show it)."""
        return {
            "tool": self.tool,
            "arguments": self.arguments,
            "effects": sorted(self.effects),
            "decision": self.decision,
            "reason": self.reason,
            "summary": self.preview.summary,
            "detail": self.preview.detail,
            "facts": dict(self.preview.facts),
            "call_id": self.call_id,
        }


@dataclass(frozen=True)
class Verdict:
    """The answer to an ``ask``: approved or not, by whom, and why not."""

    approved: bool
    by: str
    reason: str = ""


Answerer = Callable[[ApprovalRequest], Verdict]


@dataclass(frozen=True)
class ApprovalPolicy:
    """The rules in force for one session, MCP server or study.

    Args:
        rules: the user's rules, tried in order before ``BUILTIN_RULES`` and ``DEFAULT_DECISIONS``.
        approve_all: every call that would ask runs without asking (``--approve-all``).
        sites: the user's ``[sites.NAME]`` tables, to tell a batch site from a local one.
    """

    rules: Sequence[ApprovalRule] = ()
    approve_all: bool = False
    sites: Mapping[str, SiteConfig] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings | None, *, approve_all: bool = False) -> ApprovalPolicy:
        if settings is None:
            return cls(approve_all=approve_all)
        return cls(tuple(settings.approval.rules), approve_all, dict(settings.sites))

    def request(
        self, tool: Tool, arguments: BaseModel, context: ToolContext, call_id: str | None = None
    ) -> ApprovalRequest:
        """What this policy decides for one validated call of ``tool``, with its preview."""
        effects, site = self.effects_of(tool, arguments, context)
        preview = _preview(tool, arguments, context, site)
        decision, reason = self.decide(tool.name, effects, preview.facts)
        dumped = arguments.model_dump(mode="json")
        return ApprovalRequest(tool.name, dumped, effects, decision, reason, preview, call_id)

    def effects_of(
        self, tool: Tool, arguments: BaseModel, context: ToolContext
    ) -> tuple[frozenset[Effect], str | None]:
        """The call's effects, with ``spends`` added when a site tool runs on a batch site; and the site."""
        if not tool.runs_on_site:
            return tool.effects, None
        default = context.tasks.default_site if context.tasks is not None else "local"
        site = getattr(arguments, "site", None) or default
        return self.effects_at(tool, site), site

    def effects_at(self, tool: Tool, site: str) -> frozenset[Effect]:
        """What ``tool`` does when its work goes to ``site``: a batch site adds ``spends``."""
        if tool.runs_on_site and self.is_batch_site(site):
            return tool.effects | {"spends"}
        return tool.effects

    def is_batch_site(self, name: str) -> bool:
        """Whether work sent to site ``name`` is charged to an allocation (an unknown site counts)."""
        try:
            site = resolve_site(name, self.sites)
        except ConfigError:
            return True  # the call fails on its own; until then, the careful answer
        return site.kind == "globus" or (site.kind == "parsl" and site.provider != "local")

    def serves_by_default(self, tool: Tool, site: str) -> bool:
        """Whether an MCP server whose work goes to ``site`` offers ``tool`` without being told to:
        nothing it does spends, destroys or runs model-written code, unless a user's rule allows it."""
        if not self.effects_at(tool, site) & NOT_SERVED_BY_DEFAULT:
            return True
        return any(rule.decision == "allow" and _names(rule, tool.name) for rule in self.rules)

    def decide(
        self, tool: str, effects: frozenset[Effect], facts: Mapping[str, Any]
    ) -> tuple[ApprovalDecision, str]:
        """The decision and its reason for an action named ``tool`` with these effects and facts; also for
        what is not a catalogue tool (``sciagent submit`` is decided as ``submit``, which ``spends``)."""
        decided: list[tuple[ApprovalDecision, str]] = []
        for effect in sorted(effects):
            decided.append(self._decide_effect(tool, effect, facts))
        decision, reason = max(decided, key=lambda pair: _STRICTNESS[pair[0]])
        if decision == "ask" and self.approve_all:
            return "allow", f"--approve-all ({reason})"
        return decision, reason

    def _decide_effect(
        self, tool: str, effect: str, facts: Mapping[str, Any]
    ) -> tuple[ApprovalDecision, str]:
        for number, rule in enumerate(self.rules, start=1):
            if _covers(rule, tool, effect, facts):
                return rule.decision, f"[[approval.rules]] #{number} says {rule.decision} for {tool}"
        for rule in BUILTIN_RULES:
            if _covers(rule, tool, effect, facts):
                return rule.decision, f"built-in rule: {tool} may {effect.replace('_', ' ')}"
        decision = DEFAULT_DECISIONS[effect]
        verb = "asks first" if decision == "ask" else "runs" if decision == "allow" else "is refused"
        return decision, f"a call that {_EFFECT_WORDS[effect]} {verb}"


_EFFECT_WORDS = {
    "reads": "reads",
    "computes": "computes here",
    "writes": "writes in the session",
    "spends": "spends an allocation",
    "destroys": "cancels, holds or removes",
    "runs_code": "runs model-written code",
    "reaches_outside": "reaches outside this machine",
}


def refusal(
    request: ApprovalRequest, answer: Answerer | None, *, approved_up_front: bool = False
) -> str | None:
    """Why the call ``request`` is about may not run, or None: it is allowed, was approved up front (an
    ask only, never a deny), or ``answer`` approved it when asked (None: no one can be asked)."""
    if request.decision == "allow" or (request.decision == "ask" and approved_up_front):
        return None
    if request.decision == "deny":
        return f"refused: {request.reason}"
    if answer is None:
        return f"refused: {request.reason} and no one can approve it here (--approve-all allows it)"
    verdict = answer(request)
    return None if verdict.approved else f"refused: {request.reason}, and it was not: {verdict.reason}"


def _names(rule: ApprovalRule, tool: str) -> bool:
    return rule.tool is not None and fnmatch.fnmatchcase(tool, rule.tool)


def _covers(rule: ApprovalRule, tool: str, effect: str, facts: Mapping[str, Any]) -> bool:
    """Whether ``rule`` decides ``effect`` of a call of ``tool`` with these ``facts``."""
    if rule.tool is not None and not fnmatch.fnmatchcase(tool, rule.tool):
        return False
    if rule.effect is not None and rule.effect != effect:
        return False
    if rule.site is not None and facts.get("site") != rule.site:
        return False
    if rule.queue is not None and facts.get("queue") != rule.queue:
        return False
    nodes, walltime_s = facts.get("nodes"), facts.get("walltime_s")
    return _within(nodes, rule.max_nodes) and _within(walltime_s, rule.max_walltime_s)


def _within(value: Any, most: int | None) -> bool:
    """A bound holds only for a stated number no larger than it (no bound: anything)."""
    if most is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value <= most


def _preview(tool: Tool, arguments: BaseModel, context: ToolContext, site: str | None) -> CallPreview:
    """The tool's own preview of the call, or its name and arguments; never an exception (a preview
    that fails says so, and the call is still decided: the rules then see no facts)."""
    fallback = f"{tool.name}({json.dumps(arguments.model_dump(mode='json'), sort_keys=True)})"
    if tool.preview is None:
        return CallPreview(summary=fallback, facts={"site": site} if site else {})
    try:
        preview = tool.preview(arguments, context)
    except Exception as exc:  # a preview reads files the model named: anything can be wrong there
        return CallPreview(summary=f"{fallback} (no preview: {type(exc).__name__}: {exc})")
    if site and "site" not in preview.facts:
        return CallPreview(preview.summary, preview.detail, {**preview.facts, "site": site})
    return preview
