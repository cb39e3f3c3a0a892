"""Results of the conformance checks: one :class:`CheckResult` per named check in a :class:`CheckReport`."""

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import Tensor

from milkit.config import ComponentConfig
from milkit.errors import MilkitError

Status = Literal["pass", "fail", "skip"]


class CheckFailure(MilkitError, AssertionError):
    """A component failed one or more conformance checks; the message says which and by how much.

    It is an ``AssertionError`` too, so pytest reports it as a plain test failure.
    """


class CheckError(Exception):
    """Raised inside a check function to fail that check with a message (internal)."""


class CheckSkip(Exception):
    """Raised inside a check function when the check does not apply (internal)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check."""

    check: str
    status: Status
    message: str = ""

    def __str__(self) -> str:
        return f"{self.check}: {self.message}" if self.message else f"{self.check}: {self.status}"


@dataclass
class CheckReport:
    """Every check run on one component, in order. ``not_run`` explains checks that could not start."""

    component: str
    results: list[CheckResult] = field(default_factory=list)
    not_run: str = ""
    skip: frozenset[str] = frozenset()  # checks not to run (reported as skip); never config or build

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        """True when no check failed and the checks could run at all."""
        return not self.failures and not self.not_run

    def status(self, check: str) -> Status | None:
        return next((r.status for r in self.results if r.check == check), None)

    def raise_for_failures(self) -> "CheckReport":
        """Raise :class:`CheckFailure` listing every failed check; return ``self`` otherwise."""
        if self.not_run:
            raise CheckFailure(f"{self.component}: {self.not_run}")
        if self.failures:
            lines = "\n".join(f"  {r}" for r in self.failures)
            n = len(self.results)
            raise CheckFailure(f"{self.component} failed {len(self.failures)} of {n} checks:\n{lines}")
        return self

    def run(self, check: str, fn: Callable[[], Any]) -> Any:
        """Run one check function; record pass, fail (with its message) or skip. Returns fn's result."""
        if check in self.skip and check not in ("config", "build"):
            self.results.append(CheckResult(check, "skip", "skipped on request"))
            return None
        try:
            value = fn()
        except CheckSkip as exc:
            self.results.append(CheckResult(check, "skip", str(exc)))
            return None
        except CheckError as exc:
            self.results.append(CheckResult(check, "fail", str(exc)))
            return None
        except Exception as exc:  # noqa: BLE001 - a crashing component is a failed check, not a crash
            self.results.append(CheckResult(check, "fail", f"raised {type(exc).__name__}: {exc}"))
            return None
        self.results.append(CheckResult(check, "pass"))
        return value

    def config(self, cls: type, config: "ComponentConfig | dict[str, Any] | None",
               checks: tuple[str, ...]) -> "ComponentConfig | None":
        """Run the "config" check; without a valid config, mark the other ``checks`` skipped and return None."""
        cfg = self.run("config", lambda: component_config(cls, config))
        if cfg is None:
            if self.results[-1].status == "skip":
                self.not_run = self.results[-1].message
            self.skip_rest([c for c in checks if c != "config"], "no valid config")
        return cfg

    def skip_rest(self, checks: list[str], reason: str) -> None:
        for check in checks:
            self.results.append(CheckResult(check, "skip", reason))


def skip_set(skip: Collection[str], valid: tuple[str, ...]) -> frozenset[str]:
    """``skip`` as a frozenset; unknown check names raise ValueError listing the valid ones."""
    unknown = sorted(set(skip) - set(valid))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; valid checks: {', '.join(valid)}")
    return frozenset(skip)


def require(condition: bool, message: str) -> None:
    """Fail the current check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckError(message)


def assert_close(actual: Tensor, expected: Tensor, what: str, atol: float, context: str) -> None:
    """Fail with ``"<what> changed by max |Δ| = x (atol y) <context>"`` when the tensors differ."""
    if actual.shape != expected.shape:
        raise CheckError(f"{what} shape changed from {tuple(expected.shape)} to {tuple(actual.shape)} {context}")
    if actual.numel() == 0:
        return
    delta = (actual.detach().float() - expected.detach().float()).abs().max().item()
    if not delta <= atol:  # also catches NaN
        raise CheckError(f"{what} changed by max |Δ| = {delta:.3g} (atol {atol:g}) {context}")


def assert_finite(t: Tensor, what: str, context: str = "") -> None:
    bad = int((~torch.isfinite(t.detach())).sum().item())
    if bad:
        raise CheckError(f"{what} has {bad} NaN/Inf value(s){' ' + context if context else ''}")


def resolve_config(cls: type, config: ComponentConfig | dict[str, Any] | None) -> ComponentConfig:
    """The component's config: ``cls.Config()`` when ``config`` is None, else the validated value.

    Raises:
        CheckSkip: the Config has required fields and no config was given.
        CheckError: the Config is not a ComponentConfig or its values do not validate.
    """
    Config = getattr(cls, "Config", None)
    require(
        isinstance(Config, type) and issubclass(Config, ComponentConfig),
        f"{cls.__qualname__}.Config must be a subclass of milkit.ComponentConfig (got {Config!r})",
    )
    if isinstance(config, ComponentConfig):
        require(isinstance(config, Config), f"config is a {type(config).__name__}, expected {Config.__name__}")
        return config
    try:
        return Config.model_validate(config or {})
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
        if config is None and missing and len(missing) == len(exc.errors()):
            raise CheckSkip(
                f"{Config.__name__} has required fields without defaults ({', '.join(missing)}); "
                f"pass config={{...}} to run the checks"
            ) from None
        raise CheckError(f"the config does not validate: {_first_errors(exc)}") from None


def check_config_contract(config: ComponentConfig) -> None:
    """Unknown keys are rejected (extra_forbidden) and dump -> JSON -> validate gives the same config."""
    Config = type(config)
    dumped = config.model_dump(mode="json")
    try:
        text = json.dumps(dumped)
    except (TypeError, ValueError) as exc:
        raise CheckError(f"config does not dump to JSON ({exc}); use JSON-compatible field types") from None
    try:
        again = Config.model_validate(json.loads(text))
    except ValidationError as exc:
        raise CheckError(f"config does not survive dump/validate: {_first_errors(exc)}") from None
    require(again == config, f"config changed in a dump/validate round trip: {dumped} -> {again.model_dump()}")
    try:
        Config.model_validate({**dumped, "milkit_unknown_key": 1})
    except ValidationError as exc:
        types = {e["type"] for e in exc.errors()}
        require("extra_forbidden" in types, f"unknown key rejected with {sorted(types)}, expected extra_forbidden")
        return
    raise CheckError(
        f"{Config.__name__} accepted the unknown key 'milkit_unknown_key'; "
        "subclass milkit.ComponentConfig and keep its model_config (extra='forbid')"
    )


def component_config(cls: type, config: ComponentConfig | dict[str, Any] | None) -> ComponentConfig:
    """The "config" check: resolve the config, then check the ComponentConfig contract on it."""
    cfg = resolve_config(cls, config)
    check_config_contract(cfg)
    return cfg


def _first_errors(exc: ValidationError, n: int = 3) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:n]]
    return "; ".join(parts)


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python values (for JSON checks)."""
    return json.loads(json.dumps(value, default=_np_default, allow_nan=True))


def _np_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
