"""The study spec: one pydantic schema for JSON over REST and YAML on disk.

Validation follows Optuna's habit of naming the value and the rule ("the value of
``reduction_factor`` is 1, but must be ``reduction_factor >= 2``"). Every rule that can be
checked without a database is checked here, so a rejected spec never reaches storage. Whatever
passes can be stored on PostgreSQL and SQLite and used by the samplers: numbers are finite,
integers fit their columns, text holds no NUL, and every count has a limit (``MAX_*``) that a
real study never reaches, checked before any work that grows with it.
"""

from __future__ import annotations

import json
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
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

import search_spaces

from . import constraints as _constraints
from ._errors import InvalidSpec
from .vocabulary import AlgorithmName, EarlyStopping, OnOom, SamplerModel

__all__ = [
    "MAX_CHOICES",
    "MAX_CHOICES_CHARS",
    "MAX_EPOCHS",
    "MAX_GRID_POINTS",
    "MAX_GRID_SEED",
    "MAX_INT_PARAM",
    "MAX_METRIC_NAME",
    "MAX_NAME",
    "MAX_OPTIONS_CHARS",
    "MAX_OPTIONS_DEPTH",
    "MAX_OPTIONS_VALUES",
    "MAX_PARAMS",
    "MAX_REDUCTION_FACTOR",
    "MAX_STEPPED_VALUES",
    "MAX_TRIALS",
    "MAX_WALL_SECONDS",
    "MIN_FLOAT_STEP",
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

# Limits a real user never reaches; each check names its limit and how to stay within it.
#: points of a grid study: the service lists and shuffles every point's index
MAX_GRID_POINTS = 1_000_000
#: values one stepped float may take (any algorithm): Optuna snaps its range with 28-digit
#: decimals, and a finer step is below what a 64-bit float tells apart
MAX_STEPPED_VALUES = 1_000_000_000
#: stepped floats are rounded to 12 decimal places (0.3, not 0.30000000000000004)
MIN_FLOAT_STEP = 1e-12
MAX_PARAMS = 1_000
MAX_CHOICES = 1_000
#: characters of one parameter's choices as JSON: Optuna stores them again with every trial
MAX_CHOICES_CHARS = 65_536
MAX_OPTIONS_DEPTH = 8
MAX_OPTIONS_VALUES = 10_000
MAX_OPTIONS_CHARS = 65_536
#: Optuna keeps every parameter as a 64-bit float, which holds integers exactly up to 2**53
MAX_INT_PARAM = 2**53
_INT64_MAX = 2**63 - 1
#: numpy's RandomState, which shuffles a grid, takes seeds 0 .. 2**32 - 1
MAX_GRID_SEED = 2**32 - 1
#: the largest budget.max_trials: trial numbers are 32-bit columns in Optuna's tables and ours
MAX_TRIALS = 2**31 - 1
#: the largest budget.max_total_epochs and budget.max_gpu_hours
MAX_TOTAL_EPOCHS = 10**9
MAX_GPU_HOURS = 10.0**7
#: the largest budget.max_epochs: epochs are report steps, rows of metrics per trial
MAX_EPOCHS = 1_000_000
MAX_REDUCTION_FACTOR = 1_000
#: characters of a study's name
MAX_NAME = 128
#: characters of a metric name, the objective's and every reported one
MAX_METRIC_NAME = 64
#: ten years; a study meant to run longer leaves max_wall_seconds unset
MAX_WALL_SECONDS = 10 * 365 * 24 * 3600

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class _Strict(BaseModel):
    # NaN and infinities are refused everywhere: JSON columns cannot store them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _show(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut short: an error echoes what was sent, never all of it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text_problem(text: str) -> str | None:
    """What stops ``text`` from being stored (PostgreSQL takes no NUL, UTF-8 no lone surrogate)."""
    if "\x00" in text:
        return (
            f"must not contain a NUL character, which PostgreSQL cannot store (got {_show(text)})"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"must be valid Unicode text, without lone surrogates (got {_show(text)})"
    return None


def _no_control(text: str) -> str:
    """Names shown in pages, logs and URLs carry no control characters (newlines, NUL, escapes)."""
    if _CONTROL_RE.search(text):
        raise ValueError(f"must not contain control characters (got {_show(text)})")
    return text


def _scalar_problem(value: Any) -> str | None:
    """What is wrong with one JSON value that is not a list or mapping, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -_INT64_MAX - 1 <= value <= _INT64_MAX:
            return None
        return f"must be an integer that fits in 64 bits, |n| < 2**63 (got {_show(value)})"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number (got {value})"
    if isinstance(value, str):
        return _text_problem(value)
    return f"must be a string, number, true/false or null (got {type(value).__name__})"


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
        if not math.isfinite(self.high - self.low):
            raise ValueError(
                f"high - low overflows a 64-bit float (low={self.low}, high={self.high}); "
                "narrow the range, or use log: true with low > 0"
            )
        if self.step is not None:
            if not self.step > 0:
                raise ValueError(f"step is {self.step}, but must be step > 0")
            if self.log:
                raise ValueError("log and step cannot be combined; drop one of them")
            if self.step < MIN_FLOAT_STEP:
                raise ValueError(
                    f"step is {self.step}, but must be step >= {MIN_FLOAT_STEP:g} "
                    "(stepped values are rounded to 12 decimal places)"
                )
            if not (self.high - self.low) / self.step < MAX_STEPPED_VALUES:
                raise ValueError(
                    f"step {self.step} cuts [{self.low}, {self.high}] into more than "
                    f"{MAX_STEPPED_VALUES:,} values, the limit; use a coarser step, or drop "
                    "step for a continuous range"
                )
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

    @field_validator("low", "high", "step")
    @classmethod
    def _exact(cls, value: int) -> int:
        if abs(value) > MAX_INT_PARAM:
            raise ValueError(
                f"must be within -{MAX_INT_PARAM:,} .. {MAX_INT_PARAM:,} (2**53), the integers "
                f"Optuna stores exactly (got {_show(value)})"
            )
        return value

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

    @field_validator("choices", mode="before")
    @classmethod
    def _plain_values(cls, choices: Any) -> Any:
        if not isinstance(choices, list):
            return choices  # pydantic says it must be a list
        if len(choices) > MAX_CHOICES:
            raise ValueError(
                f"has {len(choices):,} choices, but the limit is {MAX_CHOICES:,}; for a range of "
                "numbers use {type: int} or {type: float, step: ...} instead"
            )
        for i, choice in enumerate(choices):
            problem = _scalar_problem(choice)
            if problem:
                raise ValueError(f"choice {i} {problem}")
        if len(json.dumps(choices)) > MAX_CHOICES_CHARS:
            raise ValueError(
                f"the choices take more than {MAX_CHOICES_CHARS:,} characters as JSON (Optuna "
                "stores them with every trial); use shorter values, e.g. names for long texts"
            )
        return choices

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("choices is empty, but needs at least one value")
        # 1, 1.0 and True are one value to Optuna (it finds a choice by ==), so they count as one
        if len(set(choices)) != len(choices):
            raise ValueError(
                f"choices {_show(choices, 80)} has duplicates (1, 1.0 and true count as equal); "
                "list each value once"
            )
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
    metric: str = Field(min_length=1, max_length=MAX_METRIC_NAME)
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
    #: any 64-bit integer; grid search also needs 0 <= seed < 2**32 (checked on the study)
    seed: int | None = Field(default=None, ge=-_INT64_MAX - 1, le=_INT64_MAX)
    #: bayesian only: ``tpe`` (multivariate TPE with constant liar), ``gp``, or ``bohb`` (TPE
    #: fit on the values at the longest budget that has ``n_startup_trials`` of them, past the
    #: first rung; one draw in three at random). Left out: ``bohb`` with successive halving
    #: (``early_stopping: asha`` or ``hyperband``), ``tpe`` otherwise (see
    #: :meth:`_default_model`).
    model: SamplerModel = SamplerModel.TPE
    #: bayesian only: random trials before the model takes over (``bohb``: values at one
    #: budget before the model is fit on them).
    n_startup_trials: int = Field(default=10, ge=0, le=MAX_TRIALS)
    #: early stopping for any sampler; ``asha`` defaults to ``asha``, the others to ``none``.
    early_stopping: EarlyStopping | None = None
    reduction_factor: int = 3
    grace_period: int = 1
    #: ``asha`` and ``hyperband``: the first rung judges an attempt only once it holds this
    #: many values, the attempt's own included; one that gets there sooner goes on, and is
    #: judged at each later report until the rung holds enough (at the latest at the next
    #: rung). 1 (the default) judges at once, as Optuna does; ``auto`` uses its reduction
    #: factor, so that no trial passes the first rung for lack of rivals.
    first_rung_quorum: int = Field(default=1, ge=1, le=MAX_REDUCTION_FACTOR)

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
            raise ValueError(
                f"reduction_factor is {_show(value)}, but must be reduction_factor >= 2"
            )
        if value > MAX_REDUCTION_FACTOR:
            raise ValueError(
                f"reduction_factor is {_show(value)}, but must be reduction_factor <= "
                f"{MAX_REDUCTION_FACTOR:,} (a larger one leaves a single rung)"
            )
        return value

    @field_validator("grace_period")
    @classmethod
    def _grace(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"grace_period is {_show(value)}, but must be grace_period >= 1")
        if value > MAX_EPOCHS:
            raise ValueError(
                f"grace_period is {_show(value)}, but must be grace_period <= {MAX_EPOCHS:,} "
                "(the limit of budget.max_epochs)"
            )
        return value

    @model_validator(mode="after")
    def _default_model(self) -> AlgorithmSpec:
        """``bayesian`` with successive halving and no ``model`` given models the way BOHB
        does. TPE over the trials that successive halving stopped ranks them by how far they
        got and then by their last value, so the first rung's values decide what it learns:
        it proposes configurations that merely start fast, those then set every rung, and
        the search collapses below random search (``benchmarks/search_efficiency.py``:
        ``bayesian`` + ``asha`` with ``model: tpe`` 0.672 at 1,040 epochs, with BOHB's model
        0.773, random search 0.746). An explicit ``model`` is kept, and a stored spec says its
        model, so no study changes model."""
        if (
            self.name == AlgorithmName.BAYESIAN
            and "model" not in self.model_fields_set
            and self.pruner in (EarlyStopping.ASHA, EarlyStopping.HYPERBAND)
        ):
            self.model = SamplerModel.BOHB.value  # type: ignore[assignment]
        return self

    @model_serializer(mode="wrap")
    def _auto_dumps_what_was_set(self, handler: SerializerFunctionWrapHandler):
        """``auto`` keeps every field the spec sets beside it, a default value too
        (``grace_period: 1``, ``model: tpe``), and picks the others itself; so an ``auto``
        spec dumps only the fields it was given, and reads back the same from the database,
        a GET or a file. (No return annotation: pydantic would take it for the schema.)"""
        data = handler(self)
        if self.name == AlgorithmName.AUTO and isinstance(data, dict):
            return {k: v for k, v in data.items() if k == "name" or k in self.model_fields_set}
        return data

    @property
    def pruner(self) -> str:
        """The early-stopping rule in force: ``asha``, ``hyperband``, ``median`` or ``none``."""
        if self.early_stopping is not None:
            return str(self.early_stopping)
        return "asha" if self.name == AlgorithmName.ASHA else "none"


class BudgetSpec(_Strict):
    #: trials handed out at most; unset means unlimited (grid: the size of the grid).
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    #: epochs (report steps) of a trial that runs to the end; the last ASHA rung.
    max_epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    parallelism: int = Field(default=1, ge=1, le=1024)
    max_retries: int = Field(default=2, ge=0, le=100)
    max_wall_seconds: float | None = Field(default=None, gt=0, le=MAX_WALL_SECONDS)
    max_total_epochs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOTAL_EPOCHS,
        description="epochs (report steps) all attempts together may spend, retries included; "
        "a trial is handed out only when it fits running to max_epochs beside those in flight",
    )
    max_gpu_hours: float | None = Field(
        default=None,
        gt=0,
        le=MAX_GPU_HOURS,
        description="GPU-hours all attempts together may spend, retries included: GPUs per "
        "trial x wall time of every attempt; a study with gpus_per_trial 0 counts CPU-hours "
        "(cpus_per_trial x wall time) the same way. New trials stop when the next one, at the "
        "cost per epoch seen so far, would not fit",
    )

    @model_validator(mode="after")
    def _total_epochs_hold_a_trial(self) -> BudgetSpec:
        if self.max_total_epochs is not None and self.max_total_epochs < self.max_epochs:
            raise ValueError(
                f"max_total_epochs is {self.max_total_epochs}, but it must be at least "
                f"max_epochs ({self.max_epochs}) so that one trial can run to the end; "
                "raise max_total_epochs or lower max_epochs"
            )
        return self


class WorkloadSpec(_Strict):
    name: str = Field(default="external", min_length=1, max_length=128)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return _no_control(name)

    @field_validator("options")
    @classmethod
    def _json_data(cls, options: dict[str, Any]) -> dict[str, Any]:
        problem = _OptionsCheck().problem(options, "", 1)
        if problem:
            raise ValueError(problem)
        return options


class _OptionsCheck:
    """Walks ``workload.options``: plain JSON data, bounded in depth and size, storable."""

    def __init__(self) -> None:
        self.values = 0
        self.chars = 0

    def problem(self, value: Any, where: str, depth: int) -> str | None:
        self.values += 1
        if self.values > MAX_OPTIONS_VALUES:
            return f"holds more than {MAX_OPTIONS_VALUES:,} values; pass a file path instead"
        if isinstance(value, (dict, list, tuple)) and depth > MAX_OPTIONS_DEPTH:
            return f"{where}: nests deeper than {MAX_OPTIONS_DEPTH} levels of lists and mappings"
        if isinstance(value, dict):
            return self._mapping(value, where, depth)
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                problem = self.problem(item, f"{where}[{i}]", depth + 1)
                if problem:
                    return problem
            return None
        if isinstance(value, str):
            self.chars += len(value)
        problem = _scalar_problem(value)
        if problem:
            return f"{where}: {problem}"
        return self._too_much_text()

    def _mapping(self, mapping: dict[Any, Any], where: str, depth: int) -> str | None:
        for key, item in mapping.items():
            if not isinstance(key, str):
                return f"{where or 'keys'}: keys must be strings (got {_show(key)})"
            inner = f"{where}.{key}" if _KEY_RE.fullmatch(key) else f"{where}[{_show(key)}]"
            inner = inner.removeprefix(".")
            self.chars += len(key)
            problem = _text_problem(key)
            if problem:
                return f"{inner}: the key {problem}"
            problem = self._too_much_text() or self.problem(item, inner, depth + 1)
            if problem:
                return problem
        return None

    def _too_much_text(self) -> str | None:
        if self.chars > MAX_OPTIONS_CHARS:
            return (
                f"holds more than {MAX_OPTIONS_CHARS:,} characters of text; "
                "pass a file path instead of inline data"
            )
        return None


class ResourcesSpec(_Strict):
    model_config = ConfigDict(use_enum_values=True, validate_default=True)

    gpus_per_trial: float = Field(default=0, ge=0, le=64)
    cpus_per_trial: float = Field(default=1, gt=0, le=512)
    #: on an out-of-memory attempt: ``fail`` the trial, or retry it at half the ``batch_size``
    #: with twice the ``gradient_accumulation_steps`` (the same effective batch)
    on_oom: OnOom = OnOom.FAIL
    #: ``on_oom: accumulate`` halves the batch down to this size, and no further
    min_batch_size: int = Field(default=1, ge=1, le=MAX_INT_PARAM)

    @field_validator("on_oom", mode="before")
    @classmethod
    def _known_on_oom(cls, value: Any) -> Any:
        return _one_of(OnOom, "on_oom", value)


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
        default_factory=lambda: AlgorithmSpec(name=AlgorithmName.AUTO),
        description="the search algorithm; auto (the default) picks grid, TPE, or TPE with "
        "Hyperband early stopping from the space, the budget and max_epochs",
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    constraints: list[str] = Field(
        default_factory=list,
        description="expressions over parameter names that every trial's configuration "
        "satisfies, e.g. 'hidden_size % num_heads == 0' (see README, Constraints)",
    )

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraint_limits(cls, texts: Any) -> Any:
        if not isinstance(texts, list):
            return texts  # pydantic says it must be a list
        if len(texts) > _constraints.MAX_CONSTRAINTS:
            raise ValueError(
                f"has {len(texts):,} entries, but the limit is {_constraints.MAX_CONSTRAINTS}; "
                "combine them with 'and', or narrow the search space instead"
            )
        for i, text in enumerate(texts):
            if isinstance(text, str):
                problem = _text_problem(text[: _constraints.MAX_CONSTRAINT_CHARS + 1])
                if problem:
                    raise ValueError(f"constraint {i} {problem}")
        return texts

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        _no_control(name)
        if len(name) > MAX_NAME:
            raise ValueError(
                f"name {_show(name)} has {len(name):,} characters, but the limit is {MAX_NAME}"
            )
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

    @field_validator("preset")
    @classmethod
    def _preset_name(cls, preset: str | None) -> str | None:
        if preset is not None and not _NAME_RE.fullmatch(preset):
            raise ValueError(
                f"{_show(preset)} is not a preset name (see GET /api/v1/search-spaces)"
            )
        return preset

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("search_space"), str):
            name = data["search_space"]
            if not _NAME_RE.fullmatch(name):  # never echo or look up an arbitrary string
                names = ", ".join(search_spaces.names())
                raise ValueError(
                    f"search_space: unknown search-space preset {_show(name)}; "
                    f"known presets: {names}"
                )
            try:
                space = search_spaces.load(name)
            except search_spaces.PresetNotFound as exc:
                raise ValueError(f"search_space: {exc}") from None
            data = {**data, "search_space": space, "preset": name}
        return data

    @field_validator("search_space", mode="before")
    @classmethod
    def _parameter_names(cls, space: Any) -> Any:
        if not isinstance(space, dict):
            return space  # pydantic says it must be a mapping
        if len(space) > MAX_PARAMS:
            raise ValueError(f"has {len(space):,} parameters, but the limit is {MAX_PARAMS:,}")
        for pname in space:
            if not (isinstance(pname, str) and _PARAM_RE.fullmatch(pname)):
                raise ValueError(
                    f"parameter name {_show(pname)} is not allowed: start with a letter or '_' "
                    "and use 1-64 letters, digits, '_', '.' or '-'"
                )
        return space

    @model_validator(mode="after")
    def _check_space(self) -> StudySpec:
        if not self.search_space:
            raise ValueError(
                "search_space is empty; give at least one parameter, e.g. "
                "learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}"
            )
        if self.algorithm.name == AlgorithmName.GRID:
            _check_grid(self.search_space, self.algorithm.seed)
        if self.resources.on_oom == OnOom.ACCUMULATE:
            _check_accumulate(self.search_space)
        if self.algorithm.pruner in ("asha", "hyperband") and (
            self.algorithm.grace_period >= self.budget.max_epochs
        ):
            raise ValueError(
                f"algorithm.grace_period is {self.algorithm.grace_period} and budget.max_epochs "
                f"is {self.budget.max_epochs}, but early stopping needs grace_period < max_epochs"
            )
        if self.constraints:
            _check_constraints(self)
        return self

    @property
    def space(self) -> dict[str, FloatParam | IntParam | CategoricalParam]:
        """The resolved search space (presets already expanded)."""
        return self.search_space


def _check_accumulate(space: dict[str, FloatParam | IntParam | CategoricalParam]) -> None:
    """``on_oom: accumulate`` halves ``batch_size`` and doubles ``gradient_accumulation_steps``:
    both must be whole numbers when the space has them."""
    if "batch_size" not in space:
        raise ValueError(
            "resources.on_oom is 'accumulate', which halves the batch_size parameter, but the "
            "search space has no batch_size; add one, or use on_oom: fail"
        )
    for name in ("batch_size", "gradient_accumulation_steps"):
        param = space.get(name)
        whole = (isinstance(param, IntParam) and param.low >= 1) or (
            isinstance(param, CategoricalParam)
            and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in param.choices
            )
        )
        if param is not None and not whole:
            raise ValueError(
                f"resources.on_oom is 'accumulate', which needs {name} to be whole numbers >= 1, "
                f"but it is a {param.type} parameter of other values; make it "
                "{type: int, ...} or categorical integers"
            )


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


#: points drawn to check that a space with constraints (other than a grid's) has feasible ones
CONSTRAINT_SAMPLES = 4_096


def _check_constraints(spec: StudySpec) -> None:
    """Constraints parse over the space's names, and leave some configuration feasible: every
    point of a grid is checked, other spaces by :data:`CONSTRAINT_SAMPLES` seeded draws."""
    space = spec.search_space
    try:
        parsed = _constraints.parse_constraints(spec.constraints, _constraints.kinds_of(space))
    except _constraints.ConstraintError as exc:
        raise ValueError(str(exc)) from None
    if spec.algorithm.name != AlgorithmName.GRID:
        problem = _constraints.sampled_problem(parsed, space, CONSTRAINT_SAMPLES)
        if problem:
            raise ValueError(f"constraints: {problem}")
        return
    total = math.prod(p.grid_count() or 0 for p in space.values())
    limit = _constraints.MAX_CONSTRAINED_GRID
    if total > limit:
        raise ValueError(
            f"constraints: a grid with constraints may have at most {limit:,} points (each is "
            f"checked), but this one has {_count(total)}; use a coarser 'step' or fewer "
            "'choices', or algorithm random or bayesian with budget.max_trials"
        )
    names = {n for c in parsed for n in c.names}
    combos = math.prod(space[n].grid_count() or 0 for n in names)
    cost = sum(c.cost for c in parsed)
    if combos * cost > _constraints.MAX_CHECK_WORK:
        raise ValueError(
            f"constraints: checking the grid's {combos:,} combinations of constrained values "
            f"against constraints of {cost:,} operations in all is over the limit of "
            f"{_constraints.MAX_CHECK_WORK:,} operations; simplify the constraints, or give the "
            "parameters they name fewer values"
        )
    values = {name: param.grid_values() or [] for name, param in space.items()}
    if not _constraints.grid_has_feasible(parsed, values):
        raise ValueError(
            f"constraints: none of the {total:,} points of the grid satisfies every constraint; "
            "loosen the constraints or add values to the grid"
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
        else:
            msg = _PLAINER.get(str(kind), msg)
            if "input" in err and kind not in ("value_error", "json_invalid"):
                if _short(err["input"]):
                    msg = f"{msg} (got {err['input']!r})"
        loc = ".".join(parts)
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(lines))


_UNION_TAGS = {"float", "int", "categorical"}
_PLAINER = {
    "finite_number": "must be a finite number",
    "int_parsing_size": "is too large for an integer",
}


def _short(value: Any) -> bool:
    if isinstance(value, int) and abs(value) >= 10**80:
        return False  # and repr() of an int over 4,300 digits would raise
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
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of over 4,300 digits
        raise InvalidSpec(f"{path} is not valid YAML: {exc}") from None
    return parse_spec(data)
