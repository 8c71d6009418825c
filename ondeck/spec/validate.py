"""Parse a ModelDeployment manifest and reject what the apiserver would reject, in its words.

``ondeck run`` has no apiserver in front of it, so this is its admission: the schema checks
(pydantic, from the same model that generates the CRD) and the CEL rules' Python twins. Problems are
reported the way ``kubectl apply`` reports them (``spec.traffic.weights: must add up to 100``), so a
manifest that fails locally fails in the cluster with the same line, and the other way round.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ondeck.errors import UserError
from ondeck.spec import model as m
from ondeck.spec.rules import rules_for


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. "spec.variants[1].uri"; "" for the object itself
    message: str

    def __str__(self) -> str:
        if self.message.startswith("unknown field"):
            return self.message
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(UserError):
    """A manifest the apiserver would reject; ``problems`` lists each reason."""

    def __init__(self, problems: list[Problem], source: str = "manifest"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(map(str, problems)))


def load_manifest(path: str | Path) -> m.ModelDeployment:
    """Read a YAML file holding one ModelDeployment."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    mds = [d for d in docs if isinstance(d, dict) and d.get("kind") == m.KIND]
    if len(mds) != 1:
        raise UserError(f"{path}: expected one {m.KIND}, found {len(mds)}")
    return parse_manifest(mds[0], source=str(path))


def parse_manifest(data: Any, source: str = "manifest") -> m.ModelDeployment:
    """A validated ModelDeployment, or :class:`SpecError` naming every problem."""
    try:
        md = m.ModelDeployment.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem(err) for err in exc.errors()], source) from None
    problems = list(rule_violations(md))
    if problems:
        raise SpecError(problems, source)
    return md


def rule_violations(obj: BaseModel, path: str = ""):
    """Yield a Problem for every rule of :mod:`ondeck.spec.rules` that ``obj`` (or a part of it) breaks."""
    for rule in rules_for(type(obj)):
        if not rule.check(obj):
            yield Problem((path + (rule.field or "")).lstrip("."), rule.message)
    for name, info in type(obj).model_fields.items():
        if name == "status":
            continue  # written by the operator; rules are about what users write
        value = getattr(obj, name)
        where = f"{path}.{info.alias or name}" if path else (info.alias or name)
        if isinstance(value, BaseModel):
            yield from rule_violations(value, where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from rule_violations(item, f"{where}[{i}]")


# --- pydantic errors in the apiserver's words ---------------------------------------------------

_TYPE_NAMES = {"int": "integer", "float": "number", "string": "string", "bool": "boolean", "dict": "object",
               "list": "array", "model": "object", "model_attributes": "object", "literal": "string"}


def _problem(err: dict[str, Any]) -> Problem:
    path, annotation = _walk(err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return Problem(path, f'unknown field "{path}"')
    if kind == "missing":
        return Problem(path, "Required value")
    if kind == "literal_error":
        allowed = ", ".join(f'"{a}"' for a in typing.get_args(annotation))
        return Problem(path, f'Unsupported value: "{err["input"]}": supported values: {allowed}')
    bounds = {"less_than_equal": ("less than or equal to", "le"), "greater_than_equal": ("greater than or equal to", "ge"),
              "less_than": ("less than", "lt"), "greater_than": ("greater than", "gt")}
    if kind in bounds:
        words, key = bounds[kind]
        return Problem(path, f"should be {words} {_number(ctx[key])}")
    if kind == "string_pattern_mismatch":
        return Problem(path, f"should match '{ctx['pattern']}'")
    if kind == "string_too_long":
        return Problem(path, f"Too long: may not be more than {ctx['max_length']} bytes")
    if kind == "string_too_short":
        return Problem(path, f"should be at least {ctx['min_length']} chars long")
    if kind == "too_long":
        unit = "properties" if isinstance(err["input"], dict) else "items"
        return Problem(path, f"Too many: {len(err['input'])}: must have at most {ctx['max_length']} {unit}")
    if kind == "too_short":
        unit = "properties" if isinstance(err["input"], dict) else "items"
        return Problem(path, f"should have at least {ctx['min_length']} {unit}")
    if kind == "value_error":
        return Problem(path, str(ctx.get("error", err["msg"])))
    base = kind.rsplit("_", 1)[0] if kind.endswith(("_type", "_parsing")) else None
    if base in _TYPE_NAMES:
        return Problem(path, f"must be of type {_TYPE_NAMES[base]}")
    return Problem(path, err["msg"])


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _walk(loc: tuple[Any, ...]) -> tuple[str, Any]:
    """The apiserver's path for a pydantic error location, and the annotation found there.

    pydantic's ``loc`` mixes field aliases, list indexes, dict keys and union-branch tags
    (``int``, ``str``); walking the model's annotations tells them apart.
    """
    path, ann = "", m.ModelDeployment
    for part in loc:
        ann = _unwrap(ann)
        origin = typing.get_origin(ann)
        if origin is list and isinstance(part, int):
            path, ann = f"{path}[{part}]", typing.get_args(ann)[0]
        elif origin is dict:
            path, ann = f"{path}.{part}", typing.get_args(ann)[1]
        elif inspect.isclass(ann) and issubclass(ann, BaseModel):
            field = next(((n, f) for n, f in ann.model_fields.items() if part in (f.alias, n)), None)
            if field is None:  # an unknown field: its name is the last part of the path
                return f"{path}.{part}".lstrip("."), None
            path, ann = f"{path}.{field[1].alias or field[0]}", field[1].annotation
        # anything else is a union-branch tag: not part of the path
    return path.lstrip("."), _unwrap(ann)


def _unwrap(ann: Any) -> Any:
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann
