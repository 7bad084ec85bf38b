"""``ask_user``: the model asks the person a question, in ``chat`` or an interactive ``ask``.

In a run with no one to answer (no terminal, a batch job) the tool says so instead of waiting, and
the model goes on with what it has.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sciagent.tools.registry import ToolContext, ToolFailed, define_tool


class QuestionArguments(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"question": "Which chain should I simulate?"}]},
    )

    question: str = Field(min_length=1, max_length=2000, description="one question for the person")


class UserReply(BaseModel):
    question: str
    reply: str


def ask_user(arguments: QuestionArguments, context: ToolContext) -> UserReply:
    """Ask the person running the session a question (only when the question cannot be answered with
    the other tools); returns their reply."""
    if context.ask_user is None:
        raise ToolFailed("no one can answer questions in this run: go on with what you have", "no_user")
    return UserReply(question=arguments.question, reply=context.ask_user(arguments.question))


CONVERSATION_TOOLS = [define_tool(ask_user, effects={"reads"})]
