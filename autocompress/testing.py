"""Contract checks that any searcher or cost model — ours or a user's — can run in its own tests, as Optuna's
testing helpers do. Each raises ``AssertionError`` naming what broke.

    from autocompress.testing import check_cost_model, check_searcher

    def test_my_searcher(tmp_path):
        register_searcher("mine", MySearcher)
        check_searcher("mine", tmp_path)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from autocompress.compress.policy import LayerSetting, Policy
from autocompress.hardware.cost_model import CostModel
from autocompress.search.job import SearchJob
from autocompress.search.record import SearchConfig


def check_searcher(
    algorithm: str, folder: Path, episodes: int = 6, space: str = "prune-quant", env: str = "host"
) -> dict[str, Any]:
    """Run a registered searcher (or agent preset) on the bundled digits CNN and check the searcher contract:

    - exactly ``episodes`` episodes are logged, numbered 0..n-1, and none breaks a hard budget;
    - ``best_policy.json`` is the episode with the highest reward;
    - the same seed gives the same rewards, episode by episode;
    - resuming a finished run plays no episode and logs none twice.

    Returns the first run's summary.
    """
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env=env, agent=algorithm, space=space, episodes=episodes, seed=7
    )
    first = SearchJob.create(config, folder / "first").run()
    rows = _rows(folder / "first")
    assert len(rows) <= episodes, f"{algorithm} logged {len(rows)} episodes, more than the budget of {episodes}"
    assert [int(r["episode"]) for r in rows] == list(range(len(rows))), f"{algorithm} logged episodes out of order"
    assert rows, f"{algorithm} logged no episode"
    assert all(int(r["hard_violations"]) == 0 for r in rows), f"{algorithm} broke a hard budget"
    best = json.loads((folder / "first" / "best_policy.json").read_text())
    assert best["reward"] == max(float(r["reward"]) for r in rows), f"{algorithm}: best_policy.json is not the best"
    SearchJob.create(config, folder / "second").run()
    again = [r["reward"] for r in _rows(folder / "second")]
    assert again == [r["reward"] for r in rows], f"{algorithm}: the same seed gave different rewards"
    SearchJob.resume(folder / "first").run()
    assert len(_rows(folder / "first")) == len(rows), f"{algorithm}: resuming a finished run logged more episodes"
    return first


def check_cost_model(cost: CostModel, model_name: str = "model") -> None:
    """Check a cost model's predictions for sense on its own layer table:

    - every figure of the uncompressed model's report is finite and non-negative, latency and energy positive;
    - keeping fewer channels never costs more latency, energy, storage or peak memory;
    - fewer weight bits never cost more storage.
    """
    table = cost.table
    full = cost.predict_policy(Policy(model_name))
    for item in fields(full):
        value = getattr(full, item.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and value >= 0, f"{item.name} must be finite and >= 0, but is {value}"
    assert full.latency_ms > 0 and full.energy_mj > 0, "the uncompressed model must cost time and energy"
    prunable = [g.leader for g in table.groups if not g.protected]
    half = Policy(model_name, layers={name: LayerSetting(keep=0.5) for name in prunable})
    pruned = cost.predict_policy(half)
    for name in ("latency_ms", "energy_mj", "storage_bytes", "peak_memory_bytes"):
        assert getattr(pruned, name) <= getattr(full, name) * (1 + 1e-9), f"pruning raised {name}"
    four = cost.predict_policy(Policy(model_name, default=LayerSetting(wbits=4, abits=8)))
    eight = cost.predict_policy(Policy(model_name, default=LayerSetting(wbits=8, abits=8)))
    assert four.storage_bytes <= eight.storage_bytes <= full.storage_bytes, "fewer weight bits raised storage"


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "progress.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
