"""The searcher interface every search algorithm implements, the context a searcher works in, and the registry that
names searchers (in the spirit of Optuna's ``BaseSampler``).

A :class:`~autocompress.search.job.SearchJob` builds the environment, the run record and the callbacks, then drives
one searcher through its lifecycle. Searchers only see a :class:`SearchContext`, never the job.
"""

from __future__ import annotations

import abc
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autocompress.env.episode import EpisodeResult
from autocompress.errors import AutoCompressError, ConfigError, did_you_mean
from autocompress.files import short, why
from autocompress.search.registry import register_searcher, searcher_factory, searcher_names

__all__ = ["SearchContext", "Searcher", "make_searcher", "register_searcher", "searcher_names"]

if TYPE_CHECKING:
    from autocompress.env import AutoCompressEnv, SearchSpace
    from autocompress.search.agents import AgentSpec
    from autocompress.search.record import SearchConfig


@dataclass
class SearchContext:
    """What a searcher may use: the environment, its agent preset, the seed, the episode budget and where to keep
    state, plus :meth:`report` to log a finished episode and :meth:`play` to play one from a list of actions.

    Args:
        env: The environment (every searcher plays the same one, so budgets, evaluation and reward are shared).
        agent: The agent preset (algorithm and hyperparameters).
        config: The search's configuration (seed, episodes, storage, names).
        run_dir: The run folder (a searcher keeps what it needs to resume in :attr:`checkpoint_dir`).
        optuna_storage: The Optuna storage URL (the shared one given by the user, or the run folder's SQLite).
        report_episode: The job's hook that logs an episode and says whether the search may go on.
        episodes_done_fn: How many episodes the run has logged (over all sessions of a resumed run).
        env_factory: Builds a fresh copy of the environment (same presets, data and seed); picklable, so that
            parallel workers (``config.workers``) can build their own in subprocesses.
        run_id: The run's unique id (made when the run folder was; the same after a resume), which tells this
            run's trials from other workers' in a shared study.
        logged_rows: The run's logged episodes (``progress.csv`` rows), e.g. to settle a trial a kill left running
            after its episode was logged.
    """

    env: AutoCompressEnv
    agent: AgentSpec
    config: SearchConfig
    run_dir: Path
    optuna_storage: str
    report_episode: Callable[[EpisodeResult, float, dict[str, float]], bool]
    episodes_done_fn: Callable[[], int]
    env_factory: Callable[[], AutoCompressEnv] | None = None
    stopped: bool = False
    run_id: str = ""
    logged_rows: Callable[[], list[dict[str, str]]] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        """Where a searcher keeps what it needs to resume (created on demand)."""
        return self.run_dir / "checkpoints"

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def episodes(self) -> int:
        """The run's whole episode budget."""
        return self.config.episodes

    @property
    def episodes_done(self) -> int:
        return self.episodes_done_fn()

    @property
    def workers(self) -> int:
        """Environments played at once (each in its own process) by searchers that support it."""
        return self.config.workers

    @property
    def space(self) -> SearchSpace:
        return self.env.space

    @property
    def steps(self) -> int:
        """Decision steps per episode."""
        return len(self.env.space.steps)

    def report(
        self, info: dict[str, Any] | EpisodeResult, wall_s: float, stats: dict[str, float] | None = None
    ) -> bool:
        """Log a finished episode (its last ``info`` or result); returns whether the search may go on. Once it
        returns ``False`` (budget spent, or a callback asked to stop), :attr:`stopped` stays ``True``."""
        result = info if isinstance(info, EpisodeResult) else EpisodeResult.from_info(info)
        if not self.report_episode(result, wall_s, stats or {}):
            self.stopped = True
        return not self.stopped

    def play(self, actions: Sequence[np.ndarray], seed: int | None = None) -> EpisodeResult:
        """Play one episode from a fixed action sequence (reset seeded by ``seed``, default the run's seed plus the
        episodes done), report it, and return its result."""
        start = time.perf_counter()
        self.env.reset(seed=self.seed + self.episodes_done if seed is None else seed)
        info: dict[str, Any] = {}
        done = False
        for action in actions:
            _, _, done, _, info = self.env.step(action)
        if not done:
            raise ValueError(f"play needs one action per step ({self.steps}), but got {len(actions)}.")
        result = EpisodeResult.from_info(info)
        self.report(result, time.perf_counter() - start)
        return result


class Searcher(abc.ABC):
    """Base class of search algorithms.

    Lifecycle, as :meth:`SearchJob.run <autocompress.search.job.SearchJob.run>` calls it:

    1. ``__init__(agent)`` — built from the agent preset by the registry (:func:`make_searcher`).
    2. :meth:`setup` — once per session, before any episode; restore state from ``context.checkpoint_dir`` here
       when a resumed run left some.
    3. :meth:`search` — play up to ``episodes`` episodes (the run's remaining budget) through ``context.env``,
       reporting each finished one with :meth:`SearchContext.report` (or use :meth:`SearchContext.play`, which
       reports); stop as soon as ``context.stopped`` is set. Everything random must derive from ``context.seed`` and
       the episode index, so the same seed gives the same search.
    4. :meth:`teardown` — once, also after an exception or Ctrl-C; save what a resume needs.

    Episodes reported are what counts: a searcher killed at any moment loses at most the episode in flight, and a
    resumed one is asked for the remaining budget only.

    A searcher that can play ``context.workers`` environments at once sets :attr:`parallel_envs`; a search with
    ``workers > 1`` and any other searcher is refused before its run folder is made.
    """

    parallel_envs: ClassVar[bool] = False

    def __init__(self, agent: AgentSpec) -> None:
        self.agent = agent

    def setup(self, context: SearchContext) -> None:  # noqa: B027 - optional hook
        """Prepare for :meth:`search` (build models, open studies, restore checkpoints)."""

    @abc.abstractmethod
    def search(self, context: SearchContext, episodes: int) -> None:
        """Play at most ``episodes`` episodes, reporting each."""

    def teardown(self, context: SearchContext) -> None:  # noqa: B027 - optional hook
        """Save state for a resume; called even when :meth:`search` raised."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Refuse, in one line, an agent preset this searcher cannot run (unknown or ill-typed hyperparameters);
        called before the run folder is made, so a bad preset leaves nothing behind."""


def check_keywords(
    agent: AgentSpec,
    target: Callable[..., Any],
    reserved: dict[str, str] | None = None,
    extras: dict[str, Any] | None = None,
) -> None:
    """Check ``agent.hyperparameters`` against the keyword arguments of ``target`` (an SB3 model or an Optuna
    sampler): every key must be one of its parameters (or of ``extras``, name -> default), none of ``reserved``
    (name -> why autocompress sets it), and a value must have its default's type (a number for a number, a bool for
    a bool, a string for a string); one line names the preset, the key and what holds."""
    reserved, extras = reserved or {}, extras or {}
    where = f"agent '{agent.name}' hyperparameters"
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(target).parameters.items()
        if name not in ("self", "policy", "env") and parameter.kind is not parameter.VAR_KEYWORD
    } | extras
    for key, value in agent.hyperparameters.items():
        if key in reserved:
            raise ConfigError(f"{where}: '{key}' is set by autocompress ({reserved[key]}); remove it from the preset.")
        if key not in defaults:
            names = sorted(set(defaults) - set(reserved))
            raise ConfigError(
                f"{where}: '{key}' must be a keyword of {getattr(target, '__qualname__', target)}, but it is not."
                + (did_you_mean(key, names) or " Its keywords are in the library's documentation.")
            )
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif isinstance(default, str):
            ok = isinstance(value, str) or value is None
        else:
            ok = True  # None, a callable or a class as default: the library checks its own
        if not ok:
            raise ConfigError(
                f"{where}: '{key}' must be a {type(default).__name__} like its default {short(default)}, but got "
                f"{short(value)}; fix the agent preset."
            )


SearcherFactory = Callable[["AgentSpec"], Searcher]


def make_searcher(agent: AgentSpec) -> Searcher:
    """The searcher of ``agent.algorithm``, built from the registry (:mod:`autocompress.search.registry`); a
    factory that cannot be imported, raises or returns no :class:`Searcher` is one line naming it."""
    try:
        factory = searcher_factory(agent.algorithm)
        searcher = factory(agent)
    except AutoCompressError:
        raise
    except Exception as exc:  # a user's factory: whatever it raises is its author's, named in one line
        raise ConfigError(
            f"the searcher '{agent.algorithm}' ({agent.searcher or 'registered'}) must build a Searcher from its agent "
            f"preset, but it failed ({why(exc, 50)}); check the searcher's code or its 'searcher:' reference."
        ) from None
    if not isinstance(searcher, Searcher):
        raise ConfigError(
            f"the searcher '{agent.algorithm}' must build an autocompress Searcher, but it returned "
            f"{type(searcher).__name__}; subclass autocompress.search.Searcher."
        )
    return searcher
