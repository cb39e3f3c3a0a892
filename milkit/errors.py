"""Exceptions raised by milkit. Every one is a :class:`MilkitError`."""

from dataclasses import dataclass


class MilkitError(Exception):
    """Base class: an error a user can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Issue:
    """One problem in a recipe, located as precisely as possible."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class RecipeError(MilkitError):
    """A recipe has one or more problems; ``issues`` lists all of them."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        lines = [str(i) for i in issues]
        super().__init__("\n".join(lines) + f"\nerror: {len(issues)} problem(s); nothing was run")


class UsageError(MilkitError):
    """A command-line option or argument is unusable (exit code 2, like a recipe problem)."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


class UnknownComponentError(MilkitError):
    """A recipe or call names a component no plugin registered."""


class DuplicateComponentError(MilkitError):
    """Two plugins registered a component of the same kind under one name."""


class PluginError(MilkitError):
    """A plugin registered something that is not a valid component."""


class DataError(MilkitError):
    """Input data (a slide, a feature file, a cohort table) is unusable; the message names it."""


class CheckpointError(MilkitError):
    """A checkpoint does not fit the model it is loaded into; the message says which part."""
