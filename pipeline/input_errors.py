"""Refusals of a user's input as one line that names the input and the problem, never a traceback.

``describe`` turns a pydantic ``ValidationError`` of a model whose fields are a user's inputs (settings, command-line
options) into one line: each input named as the user wrote it (an environment variable, an option), a bound or a
choice in the words of ``pipeline.accepted`` (generated from the model), the closest accepted choice suggested,
pydantic's wording shortened, and the refused value never shown when it may be a secret. ``closest`` and
``did_you_mean`` are that suggestion on their own, for refusals written by hand.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable

from pydantic import BaseModel, ValidationError

from pipeline.accepted import choices, problem

_OWN_MESSAGE = "value_error"
"""The error type of a validator's own ``ValueError``: its message already names the value (or leaves it out)."""


def closest(value: str, accepted: Iterable[str]) -> str | None:
    """The accepted value ``value`` was most likely meant to be (case and ``-``/``_`` ignored), if any is close."""
    folded = {choice.lower().replace("-", "_"): choice for choice in accepted}
    key = value.strip().lower().replace("-", "_")
    if key in folded and folded[key] != value:
        return folded[key]
    longer = [choice for folded_key, choice in folded.items() if folded_key.startswith(f"{key}+")]
    if len(longer) == 1:  # a scheme without its driver: postgresql -> postgresql+psycopg
        return longer[0]
    found = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    return folded[found[0]] if found else None


def did_you_mean(value: str, accepted: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` when an accepted value is close to ``value``, else nothing."""
    match = closest(value, accepted)
    return f"; did you mean {match!r}?" if match else ""


def plain(message: str) -> str:
    """pydantic's wording of a problem, shortened: ``must be at least 1`` for ``Input should be greater than or equal
    to 1``."""
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for long, short in (("Input should be", "must be"), ("Input is", "is"), ("greater than or equal to", "at least"),
                        ("less than or equal to", "at most")):
        message = message.replace(long, short)
    return message


def describe(exc: ValidationError, model: type[BaseModel], name: Callable[[str], str],
             secret: Collection[str] = (), separator: str = ": ") -> str:
    """The problems of ``exc`` on one line, each input named by ``name(field)``: a bound or a choice refused in
    the words of ``pipeline.accepted`` (with the closest accepted choice as a suggestion), a validator's own
    message after ``separator`` as it is (it names the value, masked where it must be); the values of the fields
    in ``secret`` are never shown."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        value = error.get("input")
        if error["type"] == _OWN_MESSAGE or field in secret or not field:
            message = plain(str(error["msg"]))
            problems.append(f"{name(field)}{separator}{message}" if field else message)
            continue
        text = plain(problem(error, model, lambda loc: name(str(loc[0])) if loc else ""))
        if error["type"] == "literal_error" and isinstance(value, str):
            info = model.model_fields.get(field)
            text += did_you_mean(value, map(str, choices(info))) if info is not None else ""
        problems.append(text)
    return "; ".join(dict.fromkeys(problems))
