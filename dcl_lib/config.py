"""Profiles and method configurations, as data.

A *profile* says how big a run is: ``quick`` (a CPU, a 10,000-image subset, minutes)
or ``full`` (all the data, the paper's scale).  Its data part lives here, once
(:data:`DATA_PROFILES`); each method's config class says, as a dictionary of field
values, how its schedule and sizes differ per profile (``profiles``).  The same code
path runs both: only field values change.

Every method config is a frozen dataclass that derives from :class:`MethodConfig`:

* ``Cfg.for_profile("quick")`` -- the paper's defaults with the profile's changes;
  an unknown profile name is a ``ValueError`` (never silently "quick");
* ``cfg.with_overrides({"lr": "1e-3", "channels": "(32, 64)"})`` -- command-line
  overrides parsed and type-checked against the field types (tuples stay tuples,
  bools are bools, an int is not accepted for a bool);
* ``Cfg.from_dict(record["config"])`` -- a config read back from JSON, with lists
  turned back into tuples by the same type check.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

__all__ = ["PROFILES", "DATA_PROFILES", "METHOD_PROFILES", "DataProfile", "MethodConfig", "resolve_profile",
           "coerce_value"]

PROFILES = ("quick", "full")


@dataclass(frozen=True)
class DataProfile:
    """Which images a profile uses unless the command line says otherwise."""

    split: str             # "train", "test" or "all" (both concatenated)
    subset: int | None     # a seeded, label-free random subset of this size; None = all


DATA_PROFILES: dict[str, DataProfile] = {
    # The subset is drawn with seed 0, so every method and run seed of a profile
    # sees the same images.
    "quick": DataProfile(split="train", subset=10_000),
    "full": DataProfile(split="all", subset=None),
    # a method's own extra profile (only a method whose config defines it accepts it):
    # DEPICT's official schedule on the whole of the split the command line names
    "paper": DataProfile(split="all", subset=None),
}
METHOD_PROFILES = tuple(p for p in DATA_PROFILES if p not in PROFILES)


def resolve_profile(profile: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """``quick`` (CPU, a subset, minutes) or ``full`` (paper scale), or one of ``extra``
    (a method's own profiles, see :data:`METHOD_PROFILES`).

    ``None`` reads ``$DCL_PROFILE`` and falls back to ``quick``; anything else that
    is not a profile name raises ``ValueError``.
    """
    if profile is None:
        profile = os.environ.get("DCL_PROFILE", "quick")
    p = str(profile).strip().lower()
    allowed = PROFILES + tuple(e for e in extra if e in METHOD_PROFILES)
    if p not in allowed:
        raise ValueError(f"profile must be one of {allowed}, got {profile!r} "
                         f"(check the --profile flag or DCL_PROFILE)")
    return p


def retrain_requested() -> bool:
    """``$DCL_RETRAIN=1``: train live what a chapter would otherwise load (a cached or
    committed network, a committed run)."""
    return os.environ.get("DCL_RETRAIN") == "1"


# ---------------------------------------------------------------------------
# Typed values
# ---------------------------------------------------------------------------

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce_value(value: Any, tp, name: str = "value") -> Any:
    """Return ``value`` as type ``tp`` or raise ``ValueError`` saying what was expected.

    Supports the field types the configs use: ``int``, ``float`` (an int is widened),
    ``bool`` (only ``True``/``False``), ``str``, ``X | None``, ``tuple[T, ...]`` and
    ``tuple[T1, T2]`` (a list is accepted and becomes a tuple).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(value, a, name)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{name} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{name} must be a tuple such as (1, 2), got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{name} must have {len(args)} entries, got {value!r}")
        return tuple(coerce_value(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be True or False, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {value!r}")
    raise TypeError(f"{name}: unsupported config field type {tp!r}")


def parse_text(text: str) -> Any:
    """A command-line value: a Python literal (``3``, ``1e-3``, ``(32, 64)``, ``True``,
    ``None``) or, failing that, the text itself (a string such as ``dec``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ---------------------------------------------------------------------------
# The base of every method config
# ---------------------------------------------------------------------------

class MethodConfig:
    """Mixin for a method's frozen config dataclass (see the module docstring).

    Subclasses set ``profiles = {"quick": {...}, "full": {...}}``: the fields that
    differ from the class defaults (the paper's values) in each profile.
    """

    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {"quick": {}, "full": {}}

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def for_profile(cls, profile: str | None = None):
        """The defaults with the profile's changes; ``None`` reads ``$DCL_PROFILE``."""
        p = resolve_profile(profile, extra=tuple(cls.profiles))
        return cls.from_dict(cls.profiles.get(p, {}), base=cls())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base=None, strict: bool = True):
        """A config from field values (lists become tuples, types are checked).

        ``strict=False`` ignores keys that are not fields (an older record's)."""
        types_ = cls.field_types()
        unknown = set(values) - set(types_)
        if unknown and strict:
            raise ValueError(f"unknown config field(s) for {cls.__name__}: {sorted(unknown)}; "
                             f"fields are {sorted(types_)}")
        checked = {k: coerce_value(v, types_[k], k) for k, v in values.items() if k in types_}
        return dataclasses.replace(base if base is not None else cls(), **checked)

    def with_overrides(self, overrides: Mapping[str, Any]):
        """A copy with fields replaced; string values are parsed as on the command line."""
        parsed = {k: parse_text(v) if isinstance(v, str) else v for k, v in overrides.items()}
        for k, v in list(parsed.items()):  # a str field keeps text such as "dec" or "1e-3"
            if self.field_types().get(k) is str and not isinstance(v, str):
                parsed[k] = overrides[k] if isinstance(overrides[k], str) else v
        return type(self).from_dict(parsed, base=self)
