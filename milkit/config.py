"""Base class for every component's configuration (pydantic, strict about keys), and how its
validation errors read to a user."""

import difflib

import pydantic
from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """A component's parameters, as written in its recipe table (minus ``name``).

    Unknown keys are rejected, values are validated and coerced by pydantic, and the
    model is frozen so a built component cannot drift from its saved recipe.
    Document each field with ``Field(description=...)``: ``milkit plugins`` and the docs
    show it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_messages(exc: pydantic.ValidationError, valid: list[str], what: str) -> list[tuple[str | None, str]]:
    """``(key, message)`` per error of ``exc``: unknown keys get the closest valid one and the list of
    valid keys, missing keys say so, bad values show what was given. ``what`` names the component
    ("aggregator 'abmil'"); key is None for errors of the whole table."""
    out: list[tuple[str | None, str]] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) if loc else None
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msg = f"unknown key for {what}{hint} valid keys: {', '.join(valid)}"
        elif err["type"] == "missing":
            msg = f"missing required key for {what}"
        else:
            msg = f"{err['msg']} (got {err['input']!r})" if loc else err["msg"].removeprefix("Value error, ")
        out.append((key, msg))
    return out
