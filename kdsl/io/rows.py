"""A row of data as every tool reads it: ``kdsl score``, ``kdsl explain`` and ``kdsl test`` (and
the Python calls behind them) take a row's completion through here, so a missing, null or
malformed completion is the same problem, said in the same words, wherever it is met.

A completion is a string or a chat (a list of messages, or one message: its last content is the
text scored, as TRL's conversational completions are).
"""

from __future__ import annotations

from kdsl.errors import KdslDataError

COMPLETION = "completion"
MISSING = object()  # a row without the field, told apart from one whose value is null


def shown(value) -> str:
    """A value from a row as a message quotes it (shortened)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def completion_problem(value) -> str | None:
    """Why a row's ``completion`` value cannot be scored (``MISSING``: the row has none), or
    ``None`` when it can. Said after the field's name: "`completion` ..."."""
    if value is MISSING:
        return "missing; every row needs a completion"
    if value is None:
        return "null; every row needs a completion"
    try:
        completion_text(value)
    except (KdslDataError, AttributeError, TypeError):
        return f"expected a string or a list of chat messages, got {shown(value)}"
    return None


def completion_text(value) -> str:
    """The text scored for a completion value that ``completion_problem`` accepts."""
    from kdsl.runtime.execute import completion_texts

    return completion_texts([value])[0]
