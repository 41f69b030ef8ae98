"""A grid hands out every point once, in a seeded order, and an ask on a large grid never
lists the grid: its memory does not grow with the grid's size."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from hpo import parse_spec
from hpo.algorithms._samplers import SHUFFLED_GRID_MAX, grid_point, keyed_permutation
from tests.conftest import make_spec


@pytest.mark.parametrize("total", [1, 2, 3, 5, 16, 17, 255, 256, 1000, 4097])
def test_the_keyed_permutation_is_a_permutation(total: int) -> None:
    image = [keyed_permutation(i, total, seed=7) for i in range(total)]
    assert sorted(image) == list(range(total))


def test_the_keyed_permutation_follows_the_seed() -> None:
    first = [keyed_permutation(i, 1000, seed=1) for i in range(50)]
    assert first == [keyed_permutation(i, 1000, seed=1) for i in range(50)]
    assert first != [keyed_permutation(i, 1000, seed=2) for i in range(50)]
    assert first != list(range(50)), "the order must be shuffled"


def _space(values_per_param: int, params: int) -> Any:
    spec = make_spec(
        "grid",
        search_space={
            f"p{i}": {"type": "int", "low": 0, "high": values_per_param - 1} for i in range(params)
        },
        algorithm={"name": "grid"},
    )
    return parse_spec(spec).space


def test_a_large_grid_gives_every_point_once() -> None:
    space = _space(10, 5)  # 100,000 points: past the shuffled size
    assert 10**5 > SHUFFLED_GRID_MAX
    seen = {tuple(grid_point(space, seed=3, number=n).values()) for n in range(0, 10**5, 7)}
    assert len(seen) == len(range(0, 10**5, 7))


def test_an_ask_on_a_million_point_grid_allocates_no_more_than_on_a_small_one() -> None:
    def peak(space: Any) -> int:
        grid_point(space, seed=0, number=5)  # warm: imports, caches
        tracemalloc.start()
        grid_point(space, seed=0, number=12345 % 1000)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    million = peak(_space(10, 6))
    small = peak(_space(10, 3))
    assert million < 64 * 1024, f"an ask on a 1,000,000-point grid allocated {million} bytes"
    assert million < small + 64 * 1024
