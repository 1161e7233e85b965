"""Search jobs: SB3 agents (DDPG, TD3, SAC, PPO), Optuna (TPE, NSGA-II), random and uniform baselines."""

from autocompress.search.agents import ALGORITHMS, AgentSpec, load_agent
from autocompress.search.job import SearchConfig, SearchJob

__all__ = ["ALGORITHMS", "AgentSpec", "SearchConfig", "SearchJob", "load_agent"]
