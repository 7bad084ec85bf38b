"""The structured-output style an endpoint answered in, kept in the workspace journal across sessions.

``OpenAICompatModel`` negotiates the style on its own (json_schema, then json_object, then the
schema in the prompt); remembering the outcome means the next session's first request is already
in a form the server accepts, instead of paying a rejected request (or two) every time.
"""

from __future__ import annotations

from sciagent.agent.journal import Journal
from sciagent.llm.base import RESPONSE_FORMAT_STYLES, ChatModel


def recall_dialect(journal: Journal, model: ChatModel) -> str | None:
    """Start ``model`` on the style its endpoint last answered in here; returns it (None: never asked).

    Only endpoint models (those with a ``base_url``) negotiate; the embedded model always uses its grammar.
    """
    base_url = getattr(model, "base_url", None)
    style = journal.known_dialect(base_url, model.model_id) if base_url else None
    if style not in RESPONSE_FORMAT_STYLES:
        return None
    model.response_format_style = style  # type: ignore[assignment]  # one of the styles: checked above
    return style


def remember_dialect(journal: Journal, model: ChatModel) -> None:
    """Record the style an endpoint model ends with: the one its endpoint accepted last."""
    base_url = getattr(model, "base_url", None)
    if base_url:
        journal.remember_dialect(base_url, model.model_id, model.response_format_style)
