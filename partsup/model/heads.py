"""The class heads of a crop classifier and the rules of a second look that uses them.

A crop classifier (:mod:`partsup.model.classifier`) has one or more *heads*, each a list of
class names: ``{"verify": ["object", "other"], "kind": ["a", "b"]}``. Class names are unique
across heads (a detection's ``probs`` and the writers' ``p_<class>`` columns are keyed by
them). A second look (:mod:`partsup.inference.second_look`) uses the heads in two ways, both
optional, given by :class:`SecondLookParams`:

- *verify* (filter): keep a candidate when the probability of ``positive`` in head ``head`` is
  at least ``threshold``;
- *label*: give each kept detection the most probable class of head ``head``.

Errors are one-line :class:`partsup.errors.RecipeError` naming the key (``where``).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from partsup.errors import RecipeError

__all__ = ["LabelRule", "SecondLookParams", "VerifyRule", "check_heads"]

#: a head name: a Python identifier (it names a submodule of the network)
HEAD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a class name: letters, digits, ``_ . + -`` (it becomes a CSV column ``p_<class>``)
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_heads(heads: Any, where: str = "classifier.heads") -> dict[str, tuple[str, ...]]:
    """``heads`` (``{head: [class, ...]}``) as ``{head: (class, ...)}``, checked: at least one
    head, each with two or more classes, names as :data:`HEAD_NAME` / :data:`CLASS_NAME`, no
    class name twice (within a head or across heads).

    Raises:
        RecipeError: naming the key and what is wrong.
    """
    if not isinstance(heads, Mapping) or not heads:
        raise RecipeError(f"{where}: expected a mapping head -> [class, ...] with at least one "
                          f"head, got {heads!r}")
    out: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for head, classes in heads.items():
        if not isinstance(head, str) or not HEAD_NAME.match(head):
            raise RecipeError(f"{where}: head name {head!r} must be letters, digits and _ "
                              f"(not starting with a digit)")
        if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) \
                or len(classes) < 2:
            raise RecipeError(f"{where}.{head}: expected a list of two or more class names, "
                              f"got {classes!r}")
        for name in classes:
            if not isinstance(name, str) or not CLASS_NAME.match(name):
                raise RecipeError(f"{where}.{head}: class name {name!r} must be letters, digits "
                                  f"and _ . + - (starting with a letter or digit)")
            if name in seen:
                raise RecipeError(f"{where}.{head}: class {name!r} is already a class of head "
                                  f"{seen[name]!r} (class names are unique across heads)")
            seen[name] = head
        out[head] = tuple(classes)
    return out


@dataclass(frozen=True)
class VerifyRule:
    """Keep a candidate when ``p(positive)`` of head ``head`` is ``>= threshold`` (in [0, 1])."""

    head: str
    positive: str
    threshold: float


@dataclass(frozen=True)
class LabelRule:
    """Label each kept detection with the most probable class of head ``head``."""

    head: str


@dataclass
class SecondLookParams:
    """How a second look uses its classifier (a checkpoint's ``second_look.params``).

    Attributes:
        verify: the filter rule, or None (keep every candidate).
        label: the labelling rule, or None (no ``label``; ``probs`` are still filled).
        candidate: detection parameters (the recipe's ``detect:`` keys) of the candidate stage,
            applied over the checkpoint's own when the second look runs (e.g. a lower
            threshold for recall); empty: the checkpoint's.
    """

    verify: VerifyRule | None = None
    label: LabelRule | None = None
    candidate: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, heads: Mapping[str, Any],
                  where: str = "second_look.params") -> "SecondLookParams":
        """Read ``{"verify": {head, positive, threshold} | None, "label": {head} | None,
        "candidate": {...}}`` and check it against ``heads`` (:meth:`check`).

        Raises:
            RecipeError: unknown keys, a missing or unknown head or class, a threshold outside
                [0, 1], neither rule given.
        """
        values = dict(values or {})
        _no_unknown(values, ("verify", "label", "candidate"), where)
        verify = label = None
        if values.get("verify") is not None:
            v = _mapping(values["verify"], f"{where}.verify")
            _no_unknown(v, ("head", "positive", "threshold"), f"{where}.verify")
            missing = [k for k in ("head", "positive", "threshold") if k not in v]
            if missing:
                raise RecipeError(f"{where}.verify: missing {', '.join(missing)} (expected "
                                  f"head, positive and threshold)")
            verify = VerifyRule(v["head"], v["positive"], _probability(
                v["threshold"], f"{where}.verify.threshold"))
        if values.get("label") is not None:
            lab = _mapping(values["label"], f"{where}.label")
            _no_unknown(lab, ("head",), f"{where}.label")
            if "head" not in lab:
                raise RecipeError(f"{where}.label: missing head")
            label = LabelRule(lab["head"])
        candidate = dict(_mapping(values.get("candidate") or {}, f"{where}.candidate"))
        params = cls(verify, label, candidate)
        params.check(heads, where)
        return params

    def check(self, heads: Mapping[str, Any], where: str = "second_look.params") -> None:
        """Check the rules against the classifier's ``heads`` (``{head: [class, ...]}``).

        Raises:
            RecipeError: no rule, an unknown head or positive class, a bad threshold.
        """
        if self.verify is None and self.label is None:
            raise RecipeError(f"{where}: needs verify, label or both")
        known = ", ".join(heads)
        for key, rule in (("verify", self.verify), ("label", self.label)):
            if rule is not None and rule.head not in heads:
                raise RecipeError(f"{where}.{key}.head: unknown head {rule.head!r}; the "
                                  f"classifier has {known}")
        if self.verify is not None:
            classes = list(heads[self.verify.head])
            if self.verify.positive not in classes:
                raise RecipeError(f"{where}.verify.positive: head {self.verify.head!r} has no "
                                  f"class {self.verify.positive!r}; its classes: "
                                  f"{', '.join(classes)}")
            _probability(self.verify.threshold, f"{where}.verify.threshold")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a checkpoint's ``second_look.params``; :meth:`from_dict` reads it)."""
        return {"verify": None if self.verify is None else dataclasses.asdict(self.verify),
                "label": None if self.label is None else dataclasses.asdict(self.label),
                "candidate": dict(self.candidate)}


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {value!r}")
    return value


def _no_unknown(values: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; expected "
                          f"{', '.join(known)}")


def _probability(value: Any, where: str) -> float:
    """``value`` as a float in [0, 1]; RecipeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise RecipeError(f"{where}: expected a probability in [0, 1], got {value!r}")
    return float(value)
