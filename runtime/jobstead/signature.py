"""Which handler parameters come from ``defer`` and which the worker supplies.

A parameter annotated ``Context`` (or declared as a resource, see
``App.resource``) is injected at run time: it is neither accepted by ``defer``
nor stored. Everything else must arrive through ``defer`` as JSON.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

from .errors import ConfigurationError, InvalidArguments
from .json_values import check_json


@dataclass(frozen=True)
class Inject:
    """Marks a parameter the worker fills in: ``Annotated[Mailer, Inject("mailer")]``."""

    resource: str


CONTEXT = "__context__"


@dataclass(frozen=True)
class HandlerSignature:
    name: str
    public: inspect.Signature
    #: parameter name -> resource name (``CONTEXT`` for the job context)
    injected: Mapping[str, str]
    accepts_any: bool
    #: Names ``defer`` accepts and must get: the common call is checked against
    #: these two sets, ``inspect.Signature.bind`` only explains what is wrong.
    names: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()
    #: parameter name -> (what it must be, as written; the check): plain JSON types only.
    types: Mapping[str, tuple[str, Check]] = field(default_factory=dict)
    #: parameter name -> its resolved annotation, for the published type specs.
    annotations: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, func: Callable[..., Any], name: str, resources: Mapping[type, str]) -> HandlerSignature:
        from .context import Context

        sig = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:  # unresolvable forward references: fall back to raw annotations
            hints = {p.name: p.annotation for p in sig.parameters.values()}
        injected: dict[str, str] = {}
        public: list[inspect.Parameter] = []
        for param in sig.parameters.values():
            resource = _injection(hints.get(param.name, param.annotation), Context, resources)
            if resource is not None:
                injected[param.name] = resource
                continue
            if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
                raise ConfigurationError(
                    f"handler {name}: parameter {param.name!r} is positional-only; job arguments are "
                    "stored by name, so every argument must be passable as a keyword"
                )
            public.append(param)
        named = [p for p in public if p.kind is not inspect.Parameter.VAR_KEYWORD]
        types: dict[str, tuple[str, Check]] = {}
        for param in named:
            annotation = hints.get(param.name, inspect.Parameter.empty)
            check = json_type_check(annotation)
            if check is not None:
                types[param.name] = (_display(annotation), check)
        return cls(
            name=name,
            public=sig.replace(parameters=public),
            injected=injected,
            accepts_any=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in public),
            names=frozenset(p.name for p in named),
            required=frozenset(p.name for p in named if p.default is inspect.Parameter.empty),
            types=types,
            annotations={p.name: hints.get(p.name, inspect.Parameter.empty) for p in named},
        )

    def param_types(self) -> tuple[tuple[str, Any], ...]:
        """(name, type spec) for each argument whose annotation is checked: published with the handler,
        so a defer without the code (the CLI, a cron added there) is checked as ``defer`` checks it."""
        found: list[tuple[str, Any]] = []
        for param in self.public.parameters.values():
            if param.name in self.types:
                spec = json_type_spec(self.annotations.get(param.name, inspect.Parameter.empty))
                if spec is not None:
                    found.append((param.name, spec))
        return tuple(found)

    def params(self) -> tuple[tuple[str, bool], ...]:
        """(name, required) for each argument ``defer`` takes; what the CLI checks against."""
        return tuple(
            (p.name, p.default is inspect.Parameter.empty)
            for p in self.public.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        )

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments as a call would, and return them as the JSON object to store."""
        if not args and not self.accepts_any:
            given = kwargs.keys()
            if given <= self.names and self.required <= given:
                as_given = dict(kwargs)
                check_json(as_given, f"{self.name}()")
                self._check_types(as_given)
                return as_given
        for key in kwargs:
            if key in self.injected:
                raise InvalidArguments(
                    f"{self.name}(): {key!r} is supplied by the worker when the job runs; do not pass it to defer"
                )
        try:
            bound = self.public.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArguments(f"{self.name}(): {' '.join(str(exc).split())}") from None
        stored: dict[str, Any] = {}
        for key, value in bound.arguments.items():
            if self.public.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                stored.update(value)
            else:
                stored[key] = value
        check_json(stored, f"{self.name}()")
        self._check_types(stored)
        return stored

    def bind_each(self, calls: Iterable[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
        """``bind`` for each of many keyword calls (``defer_many``), the JSON check made once for all.

        ``json.dumps`` with options builds an encoder per call: checking 20,000
        calls one by one cost more than the whole INSERT. Calls that name only
        known arguments are checked together in one dump; on a failure, each is
        checked again to name the argument. Other calls take ``bind``'s full path.
        """
        names, required, bound, together = self.names, self.required, [], []
        for call in calls:
            if not isinstance(call, Mapping):
                raise InvalidArguments(f"{where}: each call is a mapping of keyword arguments, not {call!r}")
            given = call.keys()
            if self.accepts_any or not (given <= names and required <= given):
                bound.append(self.bind((), call))
                continue
            as_given = dict(call)
            self._check_types(as_given)
            bound.append(as_given)
            together.append(as_given)
        try:
            json.dumps(together, allow_nan=False)
        except (TypeError, ValueError):
            for values in together:
                check_json(values, f"{self.name}()")
            raise  # not reached: one of them failed above
        return bound

    def _check_types(self, values: Mapping[str, Any]) -> None:
        """Refuse ``{"a": "x"}`` for ``a: int`` now, rather than in five failed attempts later."""
        for key, (expected, check) in self.types.items():
            if key in values and not check(values[key]):
                value = values[key]
                raise InvalidArguments(
                    f"{self.name}(): argument {key!r} must be {expected}, not {type(value).__name__} ({value!r:.60})"
                )


def validate_stored(
    params: tuple[tuple[str, bool], ...],
    accepts_any: bool,
    values: Mapping[str, Any],
    name: str,
    param_types: tuple[tuple[str, Any], ...] = (),
) -> None:
    """The same checks as ``bind``, against a parameter list (and its type specs) read from the database."""
    known = {p for p, _ in params}
    if not accepts_any:
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArguments(f"{name}(): unexpected argument(s): {', '.join(unknown)}")
    missing = [p for p, required in params if required and p not in values]
    if missing:
        raise InvalidArguments(f"{name}(): missing required argument(s): {', '.join(missing)}")
    check_json(values, f"{name}()")
    for key, spec in param_types:
        if key in values and not _spec_check(spec)(values[key]):
            value = values[key]
            raise InvalidArguments(
                f"{name}(): argument {key!r} must be {_spec_text(spec)}, not {type(value).__name__} ({value!r:.60})"
            )


Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SIMPLE: dict[Any, Check] = {
    int: _is_int,
    float: _is_number,
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
    type(None): lambda v: v is None,
    None: lambda v: v is None,
}


def json_type_check(annotation: Any) -> Check | None:
    """A check for annotations made of plain JSON types (int, str, float, bool, None,
    list[...], dict[str, ...] and unions of them); None (no check) for anything else.

    Only what JSON round-trips exactly is checked, so a check never refuses a
    value the handler would have accepted; TypedDicts, dataclasses, Any and
    unresolved (string) annotations are left to the handler.
    """
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    origin = get_origin(annotation)
    if origin is Annotated:
        return json_type_check(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        checks = [json_type_check(a) for a in get_args(annotation)]
        if any(c is None for c in checks):
            return None
        known = [c for c in checks if c is not None]
        return lambda v: any(c(v) for c in known)
    if annotation in (list, tuple) or origin in (list, tuple):
        item_args = get_args(annotation)
        item = json_type_check(item_args[0]) if origin is list and item_args else None
        if item is None:
            return lambda v: isinstance(v, list | tuple)
        return lambda v: isinstance(v, list | tuple) and all(item(i) for i in v)
    if annotation is dict or origin is dict:
        dict_args = get_args(annotation)
        value_check = json_type_check(dict_args[1]) if len(dict_args) == 2 else None
        if value_check is None:
            return lambda v: isinstance(v, dict)
        return lambda v: isinstance(v, dict) and all(value_check(i) for i in v.values())
    return None


def json_type_spec(annotation: Any) -> Any:
    """``json_type_check``'s annotation as JSON, to publish with the handler; None where nothing is checked.

    ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"null"``, ``{"list": item}``,
    ``{"dict": value}`` (item or value None: anything), ``{"any_of": [...]}``.
    """
    if json_type_check(annotation) is None:
        return None
    return _spec(annotation)


_SPEC_NAMES: dict[Any, str] = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null", None: "null"}


def _spec(annotation: Any) -> Any:
    if annotation in _SPEC_NAMES:
        return _SPEC_NAMES[annotation]
    origin = get_origin(annotation)
    if origin is Annotated:
        return _spec(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return {"any_of": [_spec(a) for a in get_args(annotation)]}
    if annotation in (list, tuple) or origin in (list, tuple):
        item_args = get_args(annotation)
        item = json_type_check(item_args[0]) if origin is list and item_args else None
        return {"list": _spec(item_args[0]) if item is not None else None}
    dict_args = get_args(annotation)
    value_check = json_type_check(dict_args[1]) if len(dict_args) == 2 else None
    return {"dict": _spec(dict_args[1]) if value_check is not None else None}


_SPEC_CHECKS: dict[str, Check] = {
    "int": _is_int,
    "float": _is_number,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _spec_check(spec: Any) -> Check:
    """The check a published spec stands for; an unknown spec (a newer version's) checks nothing."""
    if isinstance(spec, str):
        return _SPEC_CHECKS.get(spec, lambda v: True)
    if isinstance(spec, dict) and "any_of" in spec:
        checks = [_spec_check(s) for s in spec["any_of"]]
        return lambda v: any(c(v) for c in checks)
    if isinstance(spec, dict) and "list" in spec:
        item = _spec_check(spec["list"]) if spec["list"] is not None else None
        return lambda v: isinstance(v, list | tuple) and (item is None or all(item(i) for i in v))
    if isinstance(spec, dict) and "dict" in spec:
        value = _spec_check(spec["dict"]) if spec["dict"] is not None else None
        return lambda v: isinstance(v, dict) and (value is None or all(value(i) for i in v.values()))
    return lambda v: True


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str):
        return "None" if spec == "null" else spec
    if isinstance(spec, dict) and "any_of" in spec:
        return " | ".join(_spec_text(s) for s in spec["any_of"])
    if isinstance(spec, dict) and "list" in spec:
        return "list" if spec["list"] is None else f"list[{_spec_text(spec['list'])}]"
    if isinstance(spec, dict) and "dict" in spec:
        return "dict" if spec["dict"] is None else f"dict[str, {_spec_text(spec['dict'])}]"
    return "anything"


def _display(annotation: Any) -> str:
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _injection(annotation: Any, context_type: type, resources: Mapping[type, str]) -> str | None:
    if annotation is context_type or annotation == "Context":
        return CONTEXT
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, Inject):
                return extra.resource
        return _injection(base, context_type, resources)
    if isinstance(annotation, type) and annotation in resources:
        return resources[annotation]
    return None
