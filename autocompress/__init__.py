"""autocompress: search structured pruning, quantization, split and adaptation policies that fit trained networks
to IoT devices.

Importing the package registers the Gymnasium environment ``AutoCompress/Compress-v0``. The public API is what this
module exports; the heavier parts (torch, the search stack) load on first use::

    import autocompress as ac

    job = ac.SearchJob.create(ac.SearchConfig(model="digits-cnn", dataset="digits", agent="tpe", episodes=20))
    summary = job.run(callbacks=[MyCallback()])
    report = ac.export_run(job.run_dir, "runs/export", ac.ExportOptions())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autocompress.errors import AutoCompressError, ConfigError, DataError, PolicyError
from autocompress.registry import ENV_ID, register_env

__version__ = "0.1.0"
register_env()

# name -> module that defines it; resolved on first attribute access (PEP 562), so `import autocompress` stays light
_LAZY = {
    "SearchJob": "autocompress.search.job",
    "SearchConfig": "autocompress.search.record",
    "RunRecord": "autocompress.search.record",
    "Episode": "autocompress.search.record",
    "Searcher": "autocompress.search.base",
    "SearchContext": "autocompress.search.base",
    "register_searcher": "autocompress.search.base",
    "SearchCallback": "autocompress.search.callbacks",
    "AgentSpec": "autocompress.search.agents",
    "AutoCompressEnv": "autocompress.env.compress_env",
    "EpisodeResult": "autocompress.env.episode",
    "Deployment": "autocompress.env.deployment",
    "Policy": "autocompress.compress.policy",
    "LayerSetting": "autocompress.compress.policy",
    "Technique": "autocompress.compress.techniques",
    "FactoredModule": "autocompress.compress.techniques",
    "register_technique": "autocompress.compress.techniques",
    "CostModel": "autocompress.hardware.cost_model",
    "export_run": "autocompress.deploy.export",
    "ExportOptions": "autocompress.deploy.export",
    "load_exported": "autocompress.deploy.export",
    "evaluate_policy": "autocompress.evaluation",
    "EvaluateOptions": "autocompress.evaluation",
    "DatasetSpec": "autocompress.data.sources",
    "DriftSpec": "autocompress.data.drift",
    "load_dataset": "autocompress.data.datasets",
}

if TYPE_CHECKING:
    from autocompress.compress.policy import LayerSetting, Policy
    from autocompress.compress.techniques import FactoredModule, Technique, register_technique
    from autocompress.data.datasets import load_dataset
    from autocompress.data.drift import DriftSpec
    from autocompress.data.sources import DatasetSpec
    from autocompress.deploy.export import ExportOptions, export_run, load_exported
    from autocompress.env.compress_env import AutoCompressEnv
    from autocompress.env.deployment import Deployment
    from autocompress.env.episode import EpisodeResult
    from autocompress.evaluation import EvaluateOptions, evaluate_policy
    from autocompress.hardware.cost_model import CostModel
    from autocompress.search.agents import AgentSpec
    from autocompress.search.base import SearchContext, Searcher, register_searcher
    from autocompress.search.callbacks import SearchCallback
    from autocompress.search.job import SearchJob
    from autocompress.search.record import Episode, RunRecord, SearchConfig


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autocompress' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ENV_ID",
    "AgentSpec",
    "AutoCompressEnv",
    "AutoCompressError",
    "ConfigError",
    "CostModel",
    "DataError",
    "DatasetSpec",
    "Deployment",
    "DriftSpec",
    "Episode",
    "EpisodeResult",
    "EvaluateOptions",
    "ExportOptions",
    "FactoredModule",
    "LayerSetting",
    "Policy",
    "PolicyError",
    "RunRecord",
    "SearchCallback",
    "SearchConfig",
    "SearchContext",
    "SearchJob",
    "Searcher",
    "Technique",
    "__version__",
    "evaluate_policy",
    "export_run",
    "load_dataset",
    "load_exported",
    "register_searcher",
    "register_technique",
]
