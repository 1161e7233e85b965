"""The names of searchers: the built-in ones, those registered in this process (:func:`register_searcher`), and
those other installed packages declare as entry points of the group ``autocompress.searchers``
(``[project.entry-points."autocompress.searchers"] greedy-keep = "mypkg.search:Greedy"``).

A run records where its searcher's code lives (:func:`searcher_reference`, ``"package.module:attr"``) in its agent
preset, so a new process reopens a run made with a user's searcher (export, resume, compare) without registering it
again; importing it waits until the searcher runs (resume), and a run that names code is opened for that only with
``trust_code`` (:meth:`autocompress.search.record.RunRecord.open`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from autocompress.errors import unknown_name_error

ENTRY_POINT_GROUP = "autocompress.searchers"
# name -> a factory (a Searcher subclass or any callable taking the AgentSpec), or "module:attribute" so that a
# searcher's heavy imports happen only when it is used
_REGISTRY: dict[str, Callable[..., Any] | str] = {
    **{name: "autocompress.search.rl:SB3Searcher" for name in ("ddpg", "td3", "sac", "ppo")},
    **{name: "autocompress.search.optuna_search:OptunaSearcher" for name in ("tpe", "nsga2")},
    "random": "autocompress.search.baselines:RandomSearcher",
    "uniform": "autocompress.search.baselines:UniformSearcher",
    "tp-taylor": "autocompress.search.baselines:OneShotSearcher",
    "tp-magnitude": "autocompress.search.baselines:OneShotSearcher",
}
BUILT_IN = frozenset(_REGISTRY)
_FROM_RUNS: set[str] = set()  # names registered from a run's recorded reference, not by the caller


def register_searcher(name: str, factory: Callable[..., Any] | str, from_run: bool = False) -> None:
    """Make ``name`` usable as an agent's ``algorithm`` (and as ``agent=`` / ``--agent`` without a preset file).

    Args:
        name: The algorithm name.
        factory: A :class:`~autocompress.search.base.Searcher` subclass (or any callable taking the
            :class:`~autocompress.search.agents.AgentSpec`), or its import path ``"package.module:Class"`` — the
            form a run records, so a new process finds it.
        from_run: Registered from a run's record (not the caller's say-so; see :func:`registered_by_caller`).
    """
    _REGISTRY[name] = factory
    (_FROM_RUNS.add if from_run else _FROM_RUNS.discard)(name)


def registered_by_caller(name: str) -> bool:
    """Whether this process's own code registered ``name`` (or it is built in), rather than a run's record."""
    return name in _REGISTRY and name not in _FROM_RUNS


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def searcher_names() -> list[str]:
    return sorted({*_REGISTRY, *_entry_points()})


def searcher_reference(name: str) -> str | None:
    """Where the code of a non-built-in searcher lives, as ``"package.module:attr"`` (``None`` for a built-in, or
    for one defined where no other process can import it, e.g. in a script run as ``__main__``)."""
    if name in BUILT_IN:
        return None
    factory = _REGISTRY.get(name, _entry_points().get(name))
    if isinstance(factory, str):
        return factory
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    reference = f"{module}:{qualname}"
    try:  # only a reference that leads back to this very object helps another process
        found = _resolve(reference)
    except Exception:
        return None
    return reference if found is factory else None


def searcher_factory(name: str) -> Callable[..., Any]:
    """The factory registered (or declared as an entry point) under ``name``, imported."""
    factory = _REGISTRY.get(name, _entry_points().get(name))
    if factory is None:
        raise unknown_name_error("algorithm", name, searcher_names())
    return _resolve(factory) if isinstance(factory, str) else factory


def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target
