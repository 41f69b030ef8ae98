"""Constraints between parameters: ``"hidden_size % num_heads == 0"``.

A constraint is parsed with :func:`ast.parse` (``mode="eval"``), and only a whitelist of nodes
is translated, each into a typed node of our own (a closure over its children's closures, with
its kind: number, text or true/false, checked as it is built). Nothing is ever handed to
``eval``, ``exec`` or ``compile``. The grammar::

    constraint  := test                                   (must be true or false)
    test        := test 'or' test | test 'and' test | 'not' test | comparison | '(' test ')'
    comparison  := expr (op expr)+       op: < <= > >= == !=  (chains like 1 <= a < b)
    expr        := expr (+ - * / // %) expr | -expr | +expr | expr ** k (k: integer 0..8)
                 | number | parameter name (dotted names like model.layers too) | '(' expr ')'
    text        := 'string' | true | false | null (True, False, None too) | a text parameter

A categorical parameter whose choices are not all numbers is *text*: it may only be compared
with ``==`` or ``!=``, to a constant (``optimizer == 'adamw'``) or to another parameter.
Evaluation is total: a division or modulo by zero, an overflow or a type mismatch makes the
constraint false (the point infeasible); it never raises.

This module uses the standard library only (the API client validates specs with it too).
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_CONSTRAINTS",
    "MAX_CONSTRAINT_CHARS",
    "MAX_CONSTRAINT_DEPTH",
    "MAX_CONSTRAINED_GRID",
    "MAX_CHECK_WORK",
    "MAX_POWER",
    "Constraint",
    "ConstraintError",
    "Kind",
    "grid_has_feasible",
    "grid_table",
    "checks_within",
    "kinds_of",
    "parse_constraint",
    "parse_constraints",
    "sample_space",
    "sampled_problem",
    "satisfies",
]

#: constraints one spec may declare
MAX_CONSTRAINTS = 32
#: characters of one constraint
MAX_CONSTRAINT_CHARS = 500
#: nesting depth of one constraint's syntax tree
MAX_CONSTRAINT_DEPTH = 32
#: points of a grid with constraints: every point is checked, and an ask orders them all
MAX_CONSTRAINED_GRID = 65_536
#: node evaluations one check may spend (a few tenths of a second): bounds the points checked
#: at creation, the fallback draws of an ask, and a constrained grid's combinations, so that
#: costly constraints cannot make a request slow
MAX_CHECK_WORK = 2**20
#: the largest exponent ``**`` takes (a constant integer)
MAX_POWER = 8

Kind = Literal["number", "text"]
Value = Any
Env = Mapping[str, Any]
_Fn = Callable[[Env], Any]


class ConstraintError(ValueError):
    """A constraint that cannot be accepted; the message says what and how to fix it."""


class _Undefined(Exception):
    """Division by zero and the like: the constraint is false for this point."""


_ARITHMETIC: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_COMPARISONS: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
}
#: what a refused node is called in an error message
_REFUSED = {
    ast.Call: "function calls",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts ([...])",
    ast.Lambda: "lambdas",
    ast.IfExp: "conditional expressions (x if c else y)",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments (:=)",
    ast.JoinedStr: "f-strings",
    ast.Starred: "starred expressions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}
#: true, false and null as YAML and JSON write them (Python's True, False, None work too)
_JSON_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_HOW = (
    "a constraint may use numbers, parameter names, + - * / // % ** (constant exponent), "
    "comparisons, and/or/not and parentheses"
)


@dataclass(frozen=True)
class _Typed:
    """A translated node: its closure, its type, and whether it is a bare name or constant."""

    fn: _Fn
    kind: Literal["number", "text", "bool"]
    #: a parameter name or a constant (what ``==`` may compare text with)
    atom: bool = False


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint: its text, the parameters it reads, and its test."""

    text: str
    names: frozenset[str]
    _test: _Fn = field(repr=False, compare=False)
    #: the nodes of its tree: what one evaluation costs, at most
    cost: int = 1

    def __call__(self, params: Env) -> bool:
        """Whether ``params`` satisfies it (a configuration without one of :attr:`names`
        does not)."""
        try:
            return bool(self._test(params))
        except (_Undefined, ArithmeticError, TypeError, ValueError, LookupError):
            return False


def kinds_of(space: Mapping[str, Any]) -> dict[str, Kind]:
    """Number or text, for every parameter of a search space (spec params, duck-typed)."""
    kinds: dict[str, Kind] = {}
    for name, param in space.items():
        choices = getattr(param, "choices", None)
        numeric = choices is None or all(
            isinstance(c, (int, float)) and not isinstance(c, str) for c in choices
        )
        kinds[name] = "number" if numeric else "text"
    return kinds


def parse_constraints(texts: Sequence[str], kinds: Mapping[str, Kind]) -> list[Constraint]:
    """Parse every constraint; the error names the one that failed (``constraints[i]``)."""
    if len(texts) > MAX_CONSTRAINTS:
        raise ConstraintError(
            f"constraints has {len(texts):,} entries, but the limit is {MAX_CONSTRAINTS}; "
            "combine them with 'and', or narrow the search space instead"
        )
    parsed = []
    for i, text in enumerate(texts):
        try:
            parsed.append(parse_constraint(text, kinds))
        except ConstraintError as exc:
            raise ConstraintError(f"constraints[{i}] {_quote(text)}: {exc}") from None
    return parsed


def parse_constraint(text: str, kinds: Mapping[str, Kind]) -> Constraint:
    """Parse one constraint over parameters ``kinds`` (name -> number or text).

    Raises:
        ConstraintError: bad syntax, an unknown name, a construct that is not allowed, a
            comparison of text with a number, or a limit exceeded.
    """
    if not isinstance(text, str):
        raise ConstraintError(f"must be a string, not {type(text).__name__}")
    if len(text) > MAX_CONSTRAINT_CHARS:
        raise ConstraintError(
            f"has {len(text):,} characters, but the limit is {MAX_CONSTRAINT_CHARS}; "
            "split it into several constraints"
        )
    if not text.strip():
        raise ConstraintError("is empty; write a comparison such as 'a <= b'")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConstraintError(f"is not a valid expression ({exc.msg}); {_HOW}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConstraintError(f"nests too deeply or is malformed; {_HOW}") from None
    if _depth(tree.body) > MAX_CONSTRAINT_DEPTH:
        raise ConstraintError(
            f"nests deeper than {MAX_CONSTRAINT_DEPTH} levels; write it more simply, or split "
            "it into several constraints"
        )
    translator = _Translator(kinds)
    typed = translator.node(tree.body)
    if typed.kind != "bool":
        raise ConstraintError(
            "must be a comparison that is true or false, e.g. 'hidden_size % num_heads == 0', "
            "not a bare value"
        )
    return Constraint(text, frozenset(translator.names), typed.fn, translator.cost)


def checks_within(constraints: Sequence[Constraint], wanted: int, work: int) -> int:
    """How many points (at most ``wanted``, at least 64) can be checked against every
    constraint with ``work`` node evaluations."""
    cost = sum(c.cost for c in constraints) or 1
    return max(64, min(wanted, work // cost))


def satisfies(constraints: Iterable[Constraint], params: Env) -> bool:
    """Whether ``params`` satisfies every constraint."""
    return all(c(params) for c in constraints)


def _quote(text: Any) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _depth(node: ast.AST) -> int:
    """The depth of ``node``'s tree, walked without recursion."""
    deepest, todo = 0, [(node, 1)]
    while todo:
        current, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_CONSTRAINT_DEPTH:
            todo.extend((child, depth + 1) for child in ast.iter_child_nodes(current))
    return deepest


class _Translator:
    """Whitelisted ``ast`` nodes to typed closures; everything else is refused by name."""

    def __init__(self, kinds: Mapping[str, Kind]) -> None:
        self.kinds = kinds
        self.names: set[str] = set()
        self.cost = 0

    def node(self, node: ast.AST) -> _Typed:
        self.cost += 1
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            return self.logic(node)
        what = _REFUSED.get(type(node), f"{type(node).__name__} expressions")
        raise ConstraintError(f"{what} are not allowed; {_HOW}")

    def constant(self, value: Any) -> _Typed:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return _Typed(lambda env: value, "text", atom=True)
        if isinstance(value, int):
            try:
                as_float = float(value)
            except OverflowError:
                as_float = math.inf
            if not math.isfinite(as_float):
                raise ConstraintError("holds a number too large for a 64-bit float")
            return _Typed(lambda env: value, "number", atom=True)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConstraintError(f"holds {value}, but numbers must be finite")
            return _Typed(lambda env: value, "number", atom=True)
        raise ConstraintError(f"{type(value).__name__} constants are not allowed; {_HOW}")

    def name(self, node: ast.Name | ast.Attribute) -> _Typed:
        dotted = _dotted(node)
        if dotted in _JSON_WORDS and dotted not in self.kinds:
            return self.constant(_JSON_WORDS[dotted])  # as YAML and JSON spell them
        if dotted is None or dotted not in self.kinds:
            if dotted is None or isinstance(node, ast.Attribute):
                raise ConstraintError(
                    f"attribute access is not allowed; {_HOW}"
                    + (f" (no parameter is named {dotted!r})" if dotted else "")
                )
            known = ", ".join(sorted(self.kinds)[:50]) or "none"
            raise ConstraintError(
                f"{dotted!r} is not a parameter of the search space; known parameters: {known}"
            )
        self.names.add(dotted)
        kind = self.kinds[dotted]
        return _Typed(lambda env: env[dotted], kind, atom=True)

    def number(self, typed: _Typed, where: str) -> _Fn:
        if typed.kind == "text":
            raise ConstraintError(
                f"{where} needs numbers, but text (a string constant, true/false/null, or a "
                "categorical parameter with non-numeric choices) can only be compared with "
                "== or != to a parameter or a constant"
            )
        if typed.kind == "bool":
            raise ConstraintError(f"{where} needs numbers, not a comparison or and/or/not")
        return typed.fn

    def unary(self, node: ast.UnaryOp) -> _Typed:
        operand = self.node(node.operand)
        if isinstance(node.op, ast.Not):
            test = self.test(operand, "'not'")
            return _Typed(lambda env: not test(env), "bool")
        fn = self.number(operand, "unary minus")
        if isinstance(node.op, ast.USub):
            return _Typed(lambda env: -fn(env), "number")
        if isinstance(node.op, ast.UAdd):
            return _Typed(fn, "number")
        raise ConstraintError(f"the operator ~ is not allowed; {_HOW}")

    def binary(self, node: ast.BinOp) -> _Typed:
        if type(node.op) not in _ARITHMETIC:
            raise ConstraintError(f"bitwise operators and @ are not allowed; {_HOW}")
        symbol, op = _ARITHMETIC[type(node.op)]
        left = self.number(self.node(node.left), f"{symbol!r}")
        if symbol == "**":
            exponent = node.right
            if not (
                isinstance(exponent, ast.Constant)
                and type(exponent.value) is int
                and 0 <= exponent.value <= MAX_POWER
            ):
                raise ConstraintError(
                    f"'**' takes a constant integer exponent 0..{MAX_POWER} only "
                    "(e.g. 'hidden_size ** 2'), not an expression"
                )
            k = exponent.value
            return _Typed(lambda env: _power(left(env), k), "number")
        right = self.number(self.node(node.right), f"{symbol!r}")
        if symbol in ("/", "//", "%"):
            return _Typed(lambda env: _divide(op, left(env), right(env)), "number")
        return _Typed(lambda env: op(left(env), right(env)), "number")

    def compare(self, node: ast.Compare) -> _Typed:
        operands = [self.node(node.left), *(self.node(n) for n in node.comparators)]
        steps: list[tuple[_Fn, Callable[[Any, Any], Any], _Fn]] = []
        for i, cmpop in enumerate(node.ops):
            if type(cmpop) not in _COMPARISONS:
                raise ConstraintError(f"'in', 'not in', 'is' and 'is not' are not allowed; {_HOW}")
            symbol, op = _COMPARISONS[type(cmpop)]
            a, b = operands[i], operands[i + 1]
            if "bool" in (a.kind, b.kind):
                raise ConstraintError(
                    f"{symbol!r} compares the result of a comparison; combine comparisons "
                    "with 'and' / 'or' instead (a chain like '1 <= a < b' is fine)"
                )
            if "text" in (a.kind, b.kind):
                if symbol not in ("==", "!=") or not (a.atom and b.atom):
                    raise ConstraintError(
                        f"text can only be compared with == or != to a parameter or a "
                        f"constant, but here it meets {symbol!r}"
                        + ("" if a.atom and b.atom else " and an arithmetic expression")
                    )
            steps.append((a.fn, op, b.fn))
        return _Typed(lambda env: _chain(steps, env), "bool")

    def test(self, typed: _Typed, where: str) -> _Fn:
        if typed.kind != "bool":
            raise ConstraintError(f"{where} needs a comparison (true or false), not a value")
        return typed.fn

    def logic(self, node: ast.BoolOp) -> _Typed:
        word = "and" if isinstance(node.op, ast.And) else "or"
        tests = [self.test(self.node(v), f"{word!r}") for v in node.values]
        if word == "and":
            return _Typed(lambda env: all(t(env) for t in tests), "bool")
        return _Typed(lambda env: any(t(env) for t in tests), "bool")


def _dotted(node: ast.AST) -> str | None:
    """``model.layers`` for an attribute chain over a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _divide(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if b == 0:
        raise _Undefined
    return op(a, b)


def _power(base: Any, exponent: int) -> Any:
    # nested powers of integers grow without bound: ((x ** 8) ** 8) ** 8 ... in a few hundred
    # characters; past 64-bit-float range the constraint is false, as on an overflow
    if isinstance(base, int) and base.bit_length() * exponent > 1024:
        raise _Undefined
    return base**exponent


def _chain(steps: list[tuple[_Fn, Callable[[Any, Any], Any], _Fn]], env: Env) -> bool:
    for left, op, right in steps:
        if not op(left(env), right(env)):
            return False
    return True


def sample_space(space: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """One point drawn uniformly from a search space (spec params, duck-typed): how a space
    with constraints is probed for feasible points, at creation and when redraws fail."""
    point: dict[str, Any] = {}
    for name, param in space.items():
        kind = param.type
        if kind == "categorical":
            point[name] = param.choices[rng.randrange(len(param.choices))]
        elif kind == "int":
            if param.log:
                value = math.exp(rng.uniform(math.log(param.low - 0.5), math.log(param.high + 0.5)))
                point[name] = min(param.high, max(param.low, round(value)))
            else:
                point[name] = param.low + param.step * rng.randrange(param.grid_count())
        elif param.step is not None:
            point[name] = round(param.low + param.step * rng.randrange(param.grid_count()), 12)
        elif param.log:
            value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
            point[name] = min(param.high, max(param.low, value))
        else:
            point[name] = rng.uniform(param.low, param.high)
    return point


def grid_table(
    constraints: Sequence[Constraint], values: Mapping[str, Sequence[Any]]
) -> tuple[list[str], list[bool]]:
    """Which combinations of the constrained parameters' grid values are feasible.

    Only the parameters some constraint reads matter, so the table lists the product of their
    value lists alone (names sorted, the last one varying fastest, as the grid numbers its
    points); the other parameters multiply the count.
    """
    names = sorted({n for c in constraints for n in c.names})
    table = [
        satisfies(constraints, dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*(values[n] for n in names))
    ]
    return names, table


def grid_has_feasible(
    constraints: Sequence[Constraint], values: Mapping[str, Sequence[Any]]
) -> bool:
    """Whether some point of the grid over ``values`` satisfies every constraint (stops at the
    first one, so a stored spec is checked again cheaply)."""
    names = sorted({n for c in constraints for n in c.names})
    return any(
        satisfies(constraints, dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*(values[n] for n in names))
    )


def sampled_problem(
    constraints: Sequence[Constraint], space: Mapping[str, Any], samples: int, seed: int = 0
) -> str | None:
    """Why no point among ``samples`` drawn from ``space`` satisfies the constraints, or None
    when one does. The draws are seeded, so the verdict is the same on every controller;
    costly constraints get fewer draws (:data:`MAX_CHECK_WORK`)."""
    samples = checks_within(constraints, samples, MAX_CHECK_WORK)
    rng = random.Random(seed)
    names = {n for c in constraints for n in c.names}
    sub = {n: p for n, p in space.items() if n in names}
    alone = [0] * len(constraints)
    for _ in range(samples):
        point = sample_space(sub, rng)
        hits = [c(point) for c in constraints]
        if all(hits):
            return None
        alone = [a + h for a, h in zip(alone, hits, strict=True)]
    never = [c.text for c, a in zip(constraints, alone, strict=True) if a == 0]
    which = (
        f"{', '.join(_quote(t) for t in never)} (on its own)"
        if never
        else "all the constraints together"
    )
    return (
        f"no configuration among {samples:,} sampled from the search space satisfies {which}; "
        "loosen the constraints or change the ranges so that some configurations are feasible"
    )
