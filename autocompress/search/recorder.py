"""What a search writes as it goes: ``progress.csv`` (one row per episode), TensorBoard scalars and figures,
``best_policy.json`` and ``pareto.json`` — all written atomically, so a kill at any moment loses no completed
episode, and reloaded on resume."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from autocompress.runs import atomic_write_json

COLUMNS = [
    "episode", "wall_s", "reward", "accuracy", "latency_ms", "energy_mj", "storage_bytes", "macs_ratio",
    "peak_memory_bytes", "constraint_violations", "hard_violations", "split", "adapt", "shift", "best_reward",
    "best_accuracy", "exploration_sigma", "actor_loss", "critic_loss", "policy_loss", "value_loss",
]  # fmt: skip
OBJECTIVES = (("accuracy", 1), ("latency_ms", -1), ("energy_mj", -1), ("storage_bytes", -1))
FIGURE_EVERY = 25


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    better_or_equal = all(sign * a[k] >= sign * b[k] for k, sign in OBJECTIVES)
    return better_or_equal and any(sign * a[k] > sign * b[k] for k, sign in OBJECTIVES)


def pareto_front(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated entries, sorted by accuracy (best first); duplicates of a policy kept once."""
    seen, unique = set(), []
    for e in entries:
        key = json.dumps(e["policy"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(e)
    front = [e for e in unique if not any(dominates(o, e) for o in unique if o is not e)]
    return sorted(front, key=lambda e: -e["accuracy"])


class SearchRecorder:
    """Log episodes of a search to its run folder.

    Args:
        run_dir: The run folder.
        hparams: Hyperparameters shown in TensorBoard's HParams tab.
    """

    def __init__(self, run_dir: Path, hparams: dict[str, Any]) -> None:
        self.run_dir, self.hparams = run_dir, hparams
        self.progress = run_dir / "progress.csv"
        self.rows = self._load_rows()
        self.best: dict[str, Any] | None = _read_json(run_dir / "best_policy.json")
        self.front: list[dict[str, Any]] = _read_json(run_dir / "pareto.json") or []
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run wrote after its last completed episode.
        self.writer = SummaryWriter(str(run_dir), purge_step=len(self.rows) or None)

    @property
    def episodes_done(self) -> int:
        return len(self.rows)

    def _load_rows(self) -> list[dict[str, str]]:
        if not self.progress.exists():
            return []
        with self.progress.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def record(self, info: dict[str, Any], wall_s: float, extra: dict[str, float] | None = None) -> dict[str, Any]:
        """Log one finished episode (the environment's final ``info``) and return its row."""
        extra = extra or {}
        episode = self.episodes_done
        entry = {k: info[k] for k in ("reward", "accuracy", "latency_ms", "energy_mj", "storage_bytes", "macs_ratio")}
        entry |= {"episode": episode, "policy": info["policy"]}
        improved = self.best is None or entry["reward"] > self.best["reward"]
        if improved:
            self.best = entry
            atomic_write_json(self.run_dir / "best_policy.json", entry)
        front = pareto_front([*self.front, entry])
        if front != self.front:
            self.front = front
            atomic_write_json(self.run_dir / "pareto.json", front)
        assert self.best is not None
        row: dict[str, Any] = {"episode": episode, "wall_s": round(wall_s, 3)}
        row |= {k: entry[k] for k in entry if k not in ("policy", "episode")}
        row |= {k: info[k] for k in ("peak_memory_bytes", "constraint_violations", "hard_violations")}
        row |= {"split": info["policy"]["split"], "adapt": info["policy"]["adapt"], "shift": info["context"]["shift"]}
        row |= {"best_reward": self.best["reward"], "best_accuracy": self.best["accuracy"]}
        row |= {k: extra.get(k, "") for k in COLUMNS[-5:]}
        self._append(row)
        self._tensorboard(row, episode, improved)
        return row

    def _append(self, row: dict[str, Any]) -> None:
        new = not self.progress.exists()
        with self.progress.open("a", newline="") as handle:
            out = csv.DictWriter(handle, COLUMNS)
            if new:
                out.writeheader()
            out.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.append({k: str(v) for k, v in row.items()})

    def _tensorboard(self, row: dict[str, Any], episode: int, improved: bool) -> None:
        w = self.writer
        for key in (
            "reward",
            "accuracy",
            "latency_ms",
            "energy_mj",
            "storage_bytes",
            "macs_ratio",
            "peak_memory_bytes",
        ):
            w.add_scalar(f"charts/{'episode_reward' if key == 'reward' else key}", float(row[key]), episode)
        w.add_scalar("charts/best_reward", float(row["best_reward"]), episode)
        w.add_scalar("charts/best_accuracy", float(row["best_accuracy"]), episode)
        w.add_scalar("charts/constraint_violations", float(row["constraint_violations"]), episode)
        if row["exploration_sigma"] != "":
            w.add_scalar("charts/exploration_sigma", float(row["exploration_sigma"]), episode)
        for loss in ("actor_loss", "critic_loss", "policy_loss", "value_loss"):
            if row[loss] != "":
                w.add_scalar(f"losses/{loss}", float(row[loss]), episode)
        if improved:
            w.add_figure("policy/best", policy_figure(self.best), episode)  # type: ignore[arg-type]
        if episode % FIGURE_EVERY == 0:
            w.add_figure("pareto/front", pareto_figure(self.rows, self.front), episode)
        w.flush()

    def close(self) -> None:
        """Final figures and the hyperparameters with the run's best results."""
        if self.rows:
            self.writer.add_figure("pareto/front", pareto_figure(self.rows, self.front), self.episodes_done - 1)
        if self.best is not None:
            metrics = {"hparams/best_reward": self.best["reward"], "hparams/best_accuracy": self.best["accuracy"]}
            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            self.writer.add_hparams(clean, metrics, run_name=".")
        self.writer.close()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def policy_figure(entry: dict[str, Any]) -> Any:
    """Per-layer keep ratio (bars) and weight/activation bits (lines) of a policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policy = entry["policy"]
    names = list(policy["layers"])
    default = policy["default"]
    settings = [policy["layers"].get(n, default) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.5))
    ax.bar(range(len(names)), [s["keep"] for s in settings], color="tab:blue", label="keep")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("keep ratio")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    twin = ax.twinx()
    twin.plot(range(len(names)), [s["wbits"] for s in settings], "o-", color="tab:red", label="weight bits")
    twin.plot(range(len(names)), [s["abits"] for s in settings], "s--", color="tab:green", label="activation bits")
    twin.set_ylabel("bits")
    ax.set_title(f"best policy: accuracy {entry['accuracy']:.3f}, split {policy['split']}, adapt {policy['adapt']}")
    fig.tight_layout()
    return fig


def pareto_figure(rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> Any:
    """Accuracy against predicted latency of every episode, with the Pareto front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(
        [float(r["latency_ms"]) for r in rows], [float(r["accuracy"]) for r in rows], s=8, c="0.6", label="episodes"
    )
    ax.scatter(
        [e["latency_ms"] for e in front], [e["accuracy"] for e in front], s=20, c="tab:red", label="Pareto front"
    )
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
