"""Search jobs: SB3 agents (DDPG, TD3, SAC, PPO), Optuna (TPE, NSGA-II), random and uniform baselines, all behind
one :class:`Searcher` base, with callbacks and one run record per run folder."""

from autocompress.search.agents import AgentSpec, load_agent
from autocompress.search.base import SearchContext, Searcher, make_searcher, register_searcher, searcher_names
from autocompress.search.callbacks import CallbackList, SearchCallback
from autocompress.search.job import SearchJob
from autocompress.search.record import Episode, RunRecord, SearchConfig

__all__ = [
    "AgentSpec",
    "CallbackList",
    "Episode",
    "RunRecord",
    "SearchCallback",
    "SearchConfig",
    "SearchContext",
    "SearchJob",
    "Searcher",
    "load_agent",
    "make_searcher",
    "register_searcher",
    "searcher_names",
]
