"""The Gymnasium environment, its search spaces, budgets, rewards, contexts and presets."""

from autocompress.env.compress_env import AutoCompressEnv
from autocompress.env.presets import EnvPreset, SpaceSpec, load_env_preset, load_space_preset
from autocompress.env.search_space import SearchSpace
from autocompress.env.workload import Workload, build_workload
from autocompress.registry import ENV_ID

__all__ = [
    "ENV_ID",
    "AutoCompressEnv",
    "EnvPreset",
    "SearchSpace",
    "SpaceSpec",
    "Workload",
    "build_workload",
    "load_env_preset",
    "load_space_preset",
]
