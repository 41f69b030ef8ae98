"""Quasi-random configurations: a scrambled Halton sequence mapped onto the search space.

BOHB's configurations drawn "at random" (the draws before any budget has enough values to fit
a model, and the random third after) are spread over the space by a low-discrepancy sequence
instead of independent uniform draws, as SMAC's and BoTorch's initial designs are: the first
``b**k`` points of dimension ``i`` (base ``b``, the ``i``-th prime) fall one into each of the
``b**k`` equal intervals of its range, so a handful of early trials already cover every region
of every parameter, where uniform draws leave gaps and clusters. Trial ``n`` gets the ``n``-th
point, so the sequence is a pure function of the key and the trial number, the same on every
controller.

The digits are scrambled by a random permutation per base and digit position (Owen 2017,
"A randomized Halton algorithm in R", Algorithm 1: scipy's ``Halton(scramble=True)`` does the
same), keyed by the study: each point is then uniform over the space on its own, the points
keep their stratification, and the high-base dimensions lose the striped correlations of plain
Halton. Bases above :data:`FULL_PERMUTATION_BASE` (a space of more than 54 parameters) get a
random affine permutation ``d -> (a * d + c) mod b`` instead, which costs nothing to draw.
Permutations are drawn with ``random.Random(...).random()`` alone, whose sequence Python keeps
the same across versions, so a seeded study proposes the same configurations after an upgrade.

Measured (``benchmarks/search_simulation.py``, LCBench, six tasks by 180 seeds, paired with
uniform draws): see the README's "Search efficiency" for the figures.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from typing import Any

from ..spec import CategoricalParam, FloatParam, IntParam
from ._space import Space, clean_params

__all__ = ["FULL_PERMUTATION_BASE", "halton", "quasi_random_params", "scramble_key"]

#: the largest double below 1: a coordinate is always in [0, 1)
_BELOW_ONE = 1.0 - 2.0**-53
#: the largest base whose digits get a full random permutation (251, the 54th prime): above
#: it, drawing a permutation per digit position would cost more than the ask itself
FULL_PERMUTATION_BASE = 256


def scramble_key(seed: int | None, study_name: str | None) -> str:
    """What scrambles a study's sequence: its seed when it has one (so that the same seed gives
    the same configurations under any name), else its name; with neither, a fresh key (the
    points are then independent uniform draws, which is what an unkeyed caller can have)."""
    if seed is not None:
        return f"seed:{seed}"
    if study_name is not None:
        return f"study:{study_name}"
    return f"unkeyed:{random.getrandbits(64)}"


def halton(index: int, dims: int, key: str) -> list[float]:
    """Point ``index`` (0, 1, ...) of the ``dims``-dimensional scrambled Halton sequence keyed
    by ``key``: one coordinate in [0, 1) per dimension."""
    if index < 0:
        raise ValueError(f"the index of a Halton point is >= 0, not {index}")
    point = []
    for base, positions in zip(_primes(dims), _scrambles(dims, key), strict=True):
        numerator, rest = 0, index
        for scramble in positions:
            rest, digit = divmod(rest, base)
            if base > FULL_PERMUTATION_BASE:
                a, c = scramble  # an affine permutation
                scrambled = (a * digit + c) % base
            else:
                scrambled = scramble[digit]
            numerator = numerator * base + scrambled
        # the index's lowest digit became the numerator's highest: read as a fraction of
        # base**positions, it is the radical inverse of the scrambled digits
        point.append(min(numerator / base ** len(positions), _BELOW_ONE))
    return point


def quasi_random_params(space: Space, *, number: int, key: str) -> dict[str, Any]:
    """Trial ``number``'s configuration: Halton point ``number`` mapped onto ``space`` (the
    parameters in name order, so that declaring them in another order changes nothing)."""
    names = sorted(space)
    point = halton(number, len(names), key)
    params = {name: _value(space[name], u) for name, u in zip(names, point, strict=True)}
    return clean_params(space, {name: params[name] for name in space})


def _value(param: FloatParam | IntParam | CategoricalParam, u: float) -> Any:
    """The value at ``u`` in [0, 1) of the parameter's range, by the rules of
    :func:`hpo.constraints.sample_space` (which draws the same way from a random generator):
    uniform on its scale, an int on a log scale over ``[low - 0.5, high + 0.5]`` and then
    rounded (Optuna's rule), one equal share of ``u`` per value of a list or a stepped range."""
    if isinstance(param, CategoricalParam):
        return param.choices[_share(u, param.grid_count())]
    if param.log:
        pad = 0.5 if isinstance(param, IntParam) else 0.0
        low, high = math.log(param.low - pad), math.log(param.high + pad)
        value = math.exp(low + u * (high - low))
        return min(max(round(value) if pad else value, param.low), param.high)
    if param.step is not None:
        return param.low + param.step * _share(u, param.grid_count() or 1)
    return min(param.low + u * (param.high - param.low), param.high)


def _share(u: float, count: int) -> int:
    """Which of ``count`` equal shares of [0, 1) holds ``u``."""
    return min(int(u * count), count - 1)


@functools.lru_cache(maxsize=64)
def _scrambles(dims: int, key: str) -> list[list[tuple[int, ...]]]:
    """Per dimension, the permutation of each digit position, the index's lowest digit first:
    enough positions that ``base ** -positions`` is below a double's resolution. A permutation
    is the tuple of its images, or ``(a, c)`` for an affine one of a base above
    :data:`FULL_PERMUTATION_BASE`."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"halton:{key}".encode()).digest(), "big"))

    def below(n: int) -> int:  # random() alone: the same sequence in every Python version
        return min(int(rng.random() * n), n - 1)

    out = []
    for base in _primes(dims):
        positions = []
        for _ in range(math.ceil(54 / math.log2(base))):
            if base <= FULL_PERMUTATION_BASE:
                images = list(range(base))
                for i in range(base - 1, 0, -1):  # Fisher-Yates
                    j = below(i + 1)
                    images[i], images[j] = images[j], images[i]
                positions.append(tuple(images))
            else:
                positions.append((1 + below(base - 1), below(base)))
        out.append(positions)
    return out


@functools.lru_cache(maxsize=8)
def _primes(count: int) -> tuple[int, ...]:
    """The first ``count`` primes."""
    primes: list[int] = []
    candidate = 2
    while len(primes) < count:
        if all(candidate % p for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    return tuple(primes)
