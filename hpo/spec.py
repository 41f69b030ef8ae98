"""The study spec: one pydantic schema for JSON over REST and YAML on disk.

Validation follows Optuna's habit of naming the value and the rule ("the value of
``reduction_factor`` is 1, but must be ``reduction_factor >= 2``"). Every rule that can be
checked without a database is checked here, so a rejected spec never reaches storage.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

import search_spaces

from ._errors import InvalidSpec
from .vocabulary import AlgorithmName, EarlyStopping, SamplerModel

__all__ = [
    "MAX_GRID_POINTS",
    "MAX_GRID_SEED",
    "AlgorithmSpec",
    "BudgetSpec",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "Param",
    "ResourcesSpec",
    "StudySpec",
    "WorkloadSpec",
    "format_errors",
    "format_validation_error",
    "load_spec",
    "parse_spec",
]

#: points of a grid study: the service lists and shuffles every point's index
MAX_GRID_POINTS = 1_000_000
#: numpy's RandomState, which shuffles a grid, takes seeds 0 .. 2**32 - 1
MAX_GRID_SEED = 2**32 - 1

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _show(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut short: an error echoes what was sent, never all of it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_control(text: str) -> str:
    """Names shown in pages, logs and URLs carry no control characters (newlines, NUL, escapes)."""
    if _CONTROL_RE.search(text):
        raise ValueError(f"must not contain control characters (got {_show(text)})")
    return text


def _one_of(words: type[Enum], what: str, value: Any) -> Any:
    allowed = [str(w.value) for w in words]
    if isinstance(value, str) and value in allowed:
        return value
    raise ValueError(f"unknown {what} {_show(value)}; choose one of {', '.join(allowed)}")


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.step is not None:
            if not self.step > 0:
                raise ValueError(f"step is {self.step}, but must be step > 0")
            if self.log:
                raise ValueError("log and step cannot be combined; drop one of them")
        return self

    def grid_count(self) -> int | None:
        """How many values :meth:`grid_values` lists, computed without listing them."""
        if self.step is None:
            return None
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def grid_values(self) -> list[float] | None:
        step, count = self.step, self.grid_count()
        if step is None or count is None:
            return None
        _check_expandable(count)
        return [round(self.low + i * step, 12) for i in range(count)]


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.step < 1:
            raise ValueError(f"step is {self.step}, but must be step >= 1")
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined; drop one of them")
        return self

    def grid_count(self) -> int:
        """How many values :meth:`grid_values` lists, computed without listing them."""
        return (self.high - self.low) // self.step + 1

    def grid_values(self) -> list[int]:
        _check_expandable(self.grid_count())
        return list(range(self.low, self.high + 1, self.step))


Scalar = bool | int | float | str | None


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("choices is empty, but needs at least one value")
        if len({repr(c) for c in choices}) != len(choices):
            raise ValueError(f"choices {choices} has duplicates; list each value once")
        return choices

    def grid_count(self) -> int:
        return len(self.choices)

    def grid_values(self) -> list[Scalar]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low={low} and high={high} must be finite numbers")
    if low >= high:
        raise ValueError(
            f"low is {low} and high is {high}, but must be low < high "
            "(for a single fixed value use {type: categorical, choices: [value]})"
        )
    if log and low <= 0:
        raise ValueError(f"low is {low}, but a log scale needs low > 0")


def _check_expandable(count: int) -> None:
    if count > MAX_GRID_POINTS:
        raise ValueError(
            f"a parameter of {count:,} values is more than a grid may list "
            f"({MAX_GRID_POINTS:,} points)"
        )


class ObjectiveSpec(_Strict):
    metric: str = Field(min_length=1, max_length=64)
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _printable(cls, metric: str) -> str:
        return _no_control(metric)


class AlgorithmSpec(_Strict):
    # the words are hpo.vocabulary's enums; the spec keeps their plain values ("grid"), so that
    # it dumps to JSON as it came and compares equal to strings
    model_config = ConfigDict(use_enum_values=True, validate_default=True)

    name: AlgorithmName
    seed: int | None = None
    #: bayesian only: ``tpe`` (multivariate TPE with constant liar) or ``gp``.
    model: SamplerModel = SamplerModel.TPE
    #: bayesian only: random trials before the model takes over.
    n_startup_trials: int = Field(default=10, ge=0)
    #: early stopping for any sampler; ``asha`` defaults to ``asha``, the others to ``none``.
    early_stopping: EarlyStopping | None = None
    reduction_factor: int = 3
    grace_period: int = 1

    @field_validator("name", mode="before")
    @classmethod
    def _known_algorithm(cls, name: Any) -> Any:
        return _one_of(AlgorithmName, "algorithm", name)

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, model: Any) -> Any:
        return _one_of(SamplerModel, "model", model)

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _known_early_stopping(cls, value: Any) -> Any:
        return None if value is None else _one_of(EarlyStopping, "early_stopping", value)

    @field_validator("reduction_factor")
    @classmethod
    def _eta(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"reduction_factor is {value}, but must be reduction_factor >= 2")
        return value

    @field_validator("grace_period")
    @classmethod
    def _grace(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"grace_period is {value}, but must be grace_period >= 1")
        return value

    @property
    def pruner(self) -> str:
        """The early-stopping rule in force: ``asha``, ``hyperband``, ``median`` or ``none``."""
        if self.early_stopping is not None:
            return str(self.early_stopping)
        return "asha" if self.name == AlgorithmName.ASHA else "none"


class BudgetSpec(_Strict):
    #: trials handed out at most; unset means unlimited (grid: the size of the grid).
    max_trials: int | None = Field(default=None, ge=1)
    #: epochs (report steps) of a trial that runs to the end; the last ASHA rung.
    max_epochs: int = Field(default=10, ge=1)
    parallelism: int = Field(default=1, ge=1, le=1024)
    max_retries: int = Field(default=2, ge=0, le=100)
    max_wall_seconds: float | None = Field(default=None, gt=0)


class WorkloadSpec(_Strict):
    name: str = Field(default="external", min_length=1, max_length=128)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return _no_control(name)


class ResourcesSpec(_Strict):
    gpus_per_trial: float = Field(default=0, ge=0, le=64)
    cpus_per_trial: float = Field(default=1, gt=0, le=512)


class StudySpec(_Strict):
    """Everything that defines a study; the body of ``POST /api/v1/studies``."""

    name: str
    objective: ObjectiveSpec
    #: a preset name from ``search_spaces/`` or an inline mapping of parameter name to range;
    #: after validation always the resolved mapping (the preset's name is kept in ``preset``).
    search_space: dict[str, Param] = Field(
        description="a preset name from search_spaces/ (GET /api/v1/search-spaces) or a mapping "
        "of parameter name to {type: float|int|categorical, ...}"
    )
    preset: str | None = Field(default=None, description="the preset the space came from")
    algorithm: AlgorithmSpec = Field(
        default_factory=lambda: AlgorithmSpec(name=AlgorithmName.RANDOM)
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        _no_control(name)
        if not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"name {_show(name)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if name.isdigit():
            raise ValueError(
                f"name {_show(name)} is all digits, which reads as a study id; add a letter"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("search_space"), str):
            name = data["search_space"]
            try:
                space = search_spaces.load(name)
            except search_spaces.PresetNotFound as exc:
                raise ValueError(str(exc)) from None
            data = {**data, "search_space": space, "preset": name}
        return data

    @model_validator(mode="after")
    def _check_space(self) -> StudySpec:
        space = self.search_space
        if not space:
            raise ValueError(
                "search_space is empty; give at least one parameter, e.g. "
                "learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}"
            )
        for pname in space:
            if not _PARAM_RE.fullmatch(pname):
                raise ValueError(
                    f"parameter name {_show(pname)} is not allowed: start with a letter or '_' "
                    "and use 1-64 letters, digits, '_', '.' or '-'"
                )
        if self.algorithm.name == AlgorithmName.GRID:
            _check_grid(space, self.algorithm.seed)
        if self.algorithm.pruner in ("asha", "hyperband") and (
            self.algorithm.grace_period >= self.budget.max_epochs
        ):
            raise ValueError(
                f"algorithm.grace_period is {self.algorithm.grace_period} and budget.max_epochs "
                f"is {self.budget.max_epochs}, but early stopping needs grace_period < max_epochs"
            )
        return self

    @property
    def space(self) -> dict[str, FloatParam | IntParam | CategoricalParam]:
        """The resolved search space (presets already expanded)."""
        return self.search_space


def _check_grid(
    space: dict[str, FloatParam | IntParam | CategoricalParam], seed: int | None
) -> None:
    """A grid must be finite, at most MAX_GRID_POINTS, and seeded as numpy allows.

    Sizes are computed, never listed: ``{type: int, low: 0, high: 10**12}`` costs nothing here.
    """
    counts: dict[str, int] = {}
    for pname, param in space.items():
        count = param.grid_count()
        if count is None:
            raise ValueError(
                f"grid search needs a finite set of values for {pname!r}; give 'step' or 'choices'"
            )
        counts[pname] = count
    total = math.prod(counts.values())
    if total > MAX_GRID_POINTS:
        largest = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{pname!r}: {_count(n)} values" for pname, n in largest)
        raise ValueError(
            f"search_space: grid search over this space has {_count(total)} points ({detail}), "
            f"but the limit is {MAX_GRID_POINTS:,}; use a coarser 'step' or fewer 'choices', "
            "or algorithm random or bayesian with budget.max_trials"
        )
    if seed is not None and not 0 <= seed <= MAX_GRID_SEED:
        raise ValueError(
            f"algorithm.seed is {seed}, but grid search needs 0 <= seed <= {MAX_GRID_SEED} "
            "(numpy shuffles the grid with it)"
        )


def _count(n: int) -> str:
    """``1,234,567``, or ``about 10^40`` for a number too long to print."""
    return f"{n:,}" if n < 10**15 else f"about 10^{int(math.log10(n))}"


def format_errors(errors: list[Any]) -> str:
    """One readable line per problem, ``field.path: what is wrong``, joined by ``; ``.

    Takes pydantic's ``errors()`` (FastAPI's request errors too: a leading ``body`` is dropped).
    """
    lines = []
    for err in errors:
        parts = [str(p) for p in err.get("loc", ()) if p not in _UNION_TAGS]
        if parts and parts[0] == "body":
            parts = parts[1:]
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        kind = err.get("type")
        if kind == "extra_forbidden":
            msg = "unknown field; check its spelling against the documented spec"
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            msg = "'type' must be one of float, int, categorical"
        elif (
            "input" in err and kind not in ("value_error", "json_invalid") and _short(err["input"])
        ):
            msg = f"{msg} (got {err['input']!r})"
        loc = ".".join(parts)
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(lines))


_UNION_TAGS = {"float", "int", "categorical"}


def _short(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 80


def format_validation_error(exc: ValidationError) -> str:
    return format_errors(exc.errors(include_url=False))


def parse_spec(data: Any) -> StudySpec:
    """Validate raw data (a dict from JSON or YAML) into a :class:`StudySpec`.

    Raises:
        InvalidSpec: with every problem found, each naming its field.
    """
    if not isinstance(data, dict):
        raise InvalidSpec(f"a study spec must be a mapping, not {type(data).__name__}")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpec(format_validation_error(exc)) from None


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec from a YAML (or JSON) file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path} is not valid YAML: {exc}") from None
    return parse_spec(data)
