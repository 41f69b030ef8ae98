"""Named search-space presets, one YAML file each in this folder.

Data and a loader only: this package imports nothing from hpo. A preset file holds an optional
``description`` and a ``parameters`` mapping in the same form as a study's inline
``search_space``; hpo validates it like any inline space.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

__all__ = ["PresetNotFound", "load", "names", "describe"]


class PresetNotFound(LookupError):
    """No preset of that name ships with hpo."""


def names() -> list[str]:
    """Sorted names of every preset that ships with hpo."""
    folder = resources.files(__name__)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def _read(name: str) -> dict[str, Any]:
    if name not in names():
        raise PresetNotFound(
            f"unknown search-space preset {name!r}; known presets: {', '.join(names())}"
        )
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
        raise ValueError(f"preset {name!r} is malformed: it needs a 'parameters' mapping")
    return data


def load(name: str) -> dict[str, Any]:
    """The ``parameters`` mapping of preset ``name`` (raw, not yet validated)."""
    return dict(_read(name)["parameters"])


def describe(name: str) -> str:
    """The one-line description of preset ``name``."""
    return str(_read(name).get("description", ""))
