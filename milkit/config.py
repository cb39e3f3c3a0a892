"""Base class for every component's configuration (pydantic, strict about keys)."""

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """A component's parameters, as written in its recipe table (minus ``name``).

    Unknown keys are rejected, values are validated and coerced by pydantic, and the
    model is frozen so a built component cannot drift from its saved recipe.
    Document each field with ``Field(description=...)``: ``milkit plugins`` and the docs
    show it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
