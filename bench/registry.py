"""A name -> factory registry, small enough to read in one screen.

* registering a name twice is an error;
* an unknown name lists the known ones and suggests the closest;
* ``bind`` validates YAML arguments against the factory's signature (types included, via
  pydantic), so a misspelt or mistyped argument fails when the ablation is loaded, not after
  an hour of training.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import pydantic

from bench.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable], Callable]:
        def deco(factory: Callable) -> Callable:
            key = name or factory.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[key] = factory
            return factory
        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., Any]:
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a string (got {type(name).__name__} {name!r}); "
                              f"known: {', '.join(self.names())}")
        if name not in self._factories:
            close = difflib.get_close_matches(str(name), self._factories, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}")
        return self._factories[name]

    def doc(self, name: str) -> str:
        """First line of the factory's docstring (for `bench list`)."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def bind(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Validate ``args`` against the factory signature; return the complete, typed arguments.

        Raises ConfigError with ``key`` = the offending argument name.
        """
        factory = self.get(name)
        fields: dict[str, Any] = {}
        for p in inspect.signature(factory, eval_str=True).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{self.kind} factory {name!r} must not take *args/**kwargs")
            ann = Any if p.annotation is p.empty else p.annotation
            if ann is bool:  # pydantic's lax mode would read 'off'/'no'/'yes' as booleans
                ann = pydantic.StrictBool
            fields[p.name] = (ann, ... if p.default is p.empty else p.default)
        schema = pydantic.create_model(f"{self.kind}_{name}", __config__=pydantic.ConfigDict(
            extra="forbid", arbitrary_types_allowed=True), **fields)
        try:
            return schema(**args).model_dump()
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or None
            msg = err["msg"]
            if err["type"] == "extra_forbidden" and key:
                close = difflib.get_close_matches(key, fields, n=1)
                msg = f"unknown argument for {self.kind} {name!r}" + (
                    f" (did you mean {close[0]!r}?)" if close else f"; allowed: {', '.join(fields)}")
            raise ConfigError(msg, key=key) from None

    def build(self, name: str, args: dict[str, Any]) -> Any:
        return self.get(name)(**self.bind(name, args))
