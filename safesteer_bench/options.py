"""Typed method options: one frozen dataclass per method, parsed once, in the spirit of TRL's configs.

Options reach a method from ``--method-args k=v,...`` (strings), from ``tune``'s choices or from
Python (already typed). :meth:`MethodOptions.parse` turns them into the method's dataclass, or
raises a one-line :class:`UserError` naming the bad key or value and listing the valid keys. The
run checks every option against every method of the run before any model loads
(:func:`check_method_args`): a key no method of the run reads, or a value out of its range, is
exit 2 in the dry run instead of a silently ignored typo. ``methods --details`` and ``run --help``
print :func:`describe_options`.

Fields declared with ``cli=False`` (``teacher_hooks``, ``progress``) are for Python callers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from safesteer_bench.errors import UserError

O = TypeVar("O", bound="MethodOptions")


def option(default: Any, help: str, *, kind: str = "str", low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] = (), allow: tuple[str, ...] = (), cli: bool = True) -> Any:
    """A dataclass field with what the parser and ``--help`` need: ``kind`` (int, float, str,
    choice, bool, any), an inclusive range, the choices, literal strings also allowed (``auto``)."""
    return field(default=default, metadata={"help": help, "kind": kind, "low": low, "high": high,
                                            "choices": choices, "allow": allow, "cli": cli})


@dataclass(frozen=True)
class OptionInfo:
    name: str
    default: Any
    help: str
    expected: str  # what a valid value looks like


def _expected(meta: Mapping[str, Any]) -> str:
    kind, low, high = meta["kind"], meta["low"], meta["high"]
    if kind == "choice":
        return " | ".join(meta["choices"])
    if kind in ("int", "float"):
        noun = "an integer" if kind == "int" else "a number"
        if low is not None and high is not None:
            text = f"{noun} in [{low:g}, {high:g}]"
        elif low is not None:
            text = f"{noun} >= {low:g}"
        else:
            text = noun
        return text + "".join(f" or {a}" for a in meta["allow"])
    return {"bool": "true | false", "str": "a non-empty string"}.get(kind, "a Python object")


def _convert(meta: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the field's kind; ValueError when it is not a valid one."""
    kind = meta["kind"]
    if isinstance(value, str):
        value = value.strip()
        if value in meta["allow"]:
            return value
        if kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("not a boolean")
            value = value.lower() in ("true", "1", "yes")
    if kind == "bool" and not isinstance(value, bool):  # 5, [..] or "maybe" from a config file
        raise ValueError("not a boolean")
    if kind == "choice" and value not in meta["choices"]:
        raise ValueError("not a choice")
    if kind == "str" and (not isinstance(value, str) or not value):
        raise ValueError("empty")
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("not a number")
        if kind == "int" and float(value) != int(value):
            raise ValueError("not an integer")
        number = float(value)
        if not math.isfinite(number) or (meta["low"] is not None and number < meta["low"]) \
                or (meta["high"] is not None and number > meta["high"]):
            raise ValueError("out of range")
        value = int(value) if kind == "int" else number + 0.0  # -0 is 0 (one value, one run id)
    return value


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options (no fields: the base model takes none)."""

    @classmethod
    def keys(cls, cli_only: bool = True) -> list[str]:
        return [f.name for f in fields(cls) if f.metadata.get("cli", True) or not cli_only]

    @classmethod
    def parse(cls: type[O], raw: Mapping[str, Any] | None, method: str, strict: bool = True) -> O:
        """The typed options of ``method`` from ``raw``. ``strict``: an unknown key is an error;
        otherwise keys this class does not know are ignored (a caller reading a shared part)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if key not in known:
                if strict:
                    raise UserError(f"unknown option '{key}' for method {method}",
                                    f"valid keys: {', '.join(cls.keys()) or 'none (it takes no options)'}")
                continue
            if value is None or (isinstance(value, str) and value.strip() == "" and known[key].default is None):
                continue  # "unset": the default
            try:
                values[key] = _convert(known[key].metadata, value)
            except (ValueError, TypeError, OverflowError):
                raise UserError(f"option {key}={value!r} is invalid for method {method}",
                                f"use {_expected(known[key].metadata)}") from None
        return cls(**values)

    @classmethod
    def describe(cls) -> list[OptionInfo]:
        return [OptionInfo(f.name, f.default, f.metadata["help"], _expected(f.metadata))
                for f in fields(cls) if f.metadata.get("cli", True)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("cli", True)}


def options_class(method: Any) -> type[MethodOptions]:
    """The options dataclass a method declares (``options_class``), else the empty base."""
    return getattr(method, "options_class", MethodOptions)


def options_of(ctx: Any, cls: type[O]) -> O:
    """``ctx``'s parsed options when they are (a subclass of) ``cls``, else ``cls`` parsed from
    ``ctx.options`` ignoring keys it does not know (contexts built by hand in Python)."""
    parsed = getattr(ctx, "config", None)
    if isinstance(parsed, cls):
        return parsed
    return cls.parse(getattr(ctx, "options", None), cls.__name__, strict=False)


def check_method_args(args: Mapping[str, Any], methods: list[str] | None = None) -> dict[str, Any]:
    """``args`` when every key is read by at least one of ``methods`` (default: every registered
    method) and every value is valid for each method that reads it; else a one-line UserError."""
    from safesteer_bench.methods.api import METHODS, get_method

    names = list(methods) if methods else METHODS.names()
    classes = {name: options_class(get_method(name)) for name in names}
    for key, value in args.items():
        readers = [name for name, cls in classes.items() if key in cls.keys(cli_only=False)]
        if not readers:
            valid = sorted({k for cls in classes.values() for k in cls.keys()})
            raise UserError(f"unknown --method-args key '{key}' (methods: {', '.join(names)})",
                            f"valid keys: {', '.join(valid) or 'none'}; see `safesteer-bench methods --details`")
        for name in readers:
            classes[name].parse({key: value}, name)
    if isinstance(args.get("judge"), str):
        from safesteer_bench.evaluation.judges import get_judge

        get_judge(args["judge"])  # unknown judge names fail in the dry run
    return dict(args)


def method_args_for(method: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's shared ``--method-args`` that ``method`` reads."""
    from safesteer_bench.methods.api import get_method

    keys = set(options_class(get_method(method)).keys(cli_only=False))
    return {k: v for k, v in args.items() if k in keys}


def describe_options(method: Any) -> list[OptionInfo]:
    return options_class(method).describe()
