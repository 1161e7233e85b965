"""The run record: the one owner of a search's run folder.

A run folder holds ``config.json`` (the :class:`SearchConfig` and the presets as resolved — the deployment with
its device, link and edge profiles, the search space, the agent — which resume, export and compare use instead of
reading the preset files again), ``command.txt``, ``system.json``, ``progress.csv`` (one row per episode),
``best_policy.json``, ``pareto.json``, ``candidates.json`` (the best distinct policies by the search's score, which
the job scores again on more validation images before it names its best), ``summary.json``, ``checkpoints/`` and,
for Optuna agents, ``optuna.db``.
Every file is written atomically (``progress.csv`` is appended and fsynced row by row), so a kill at any moment
loses no completed episode. Every reader and writer of a run folder goes through :class:`RunRecord`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.config import from_mapping
from autocompress.data import canonical_ref
from autocompress.env.deployment import Deployment
from autocompress.env.episode import OBJECTIVES, EpisodeResult
from autocompress.env.presets import EnvPreset, SpaceSpec
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.files import read_json, read_text
from autocompress.plugins import require_trust
from autocompress.runs import (
    atomic_write_json,
    command_line,
    existing_run_dir,
    new_run_dir,
    refuse_links_out,
    system_report,
)
from autocompress.search.agents import AgentSpec
from autocompress.search.registry import registered_by_caller, searcher_reference

CONFIG, PROGRESS, BEST, PARETO, SUMMARY, CANDIDATES = (
    "config.json",
    "progress.csv",
    "best_policy.json",
    "pareto.json",
    "summary.json",
    "candidates.json",
)
COLUMNS = [
    "episode",
    "wall_s",
    "reward",
    "accuracy",
    "latency_ms",
    "energy_mj",
    "storage_bytes",
    "macs_ratio",
    "peak_memory_bytes",
    "constraint_violations",
    "hard_violations",
    "split",
    "adapt",
    "shift",
    "best_reward",
    "best_accuracy",
    "exploration_sigma",
    "actor_loss",
    "critic_loss",
    "policy_loss",
    "value_loss",
]
STAT_COLUMNS = COLUMNS[-5:]  # what an agent adds to a row: exploration noise and its latest losses
RUN_ID = "run_id"  # config.json's key of the run's unique id (not a SearchConfig field)
ENTRY_KEYS = ("reward", "accuracy", "latency_ms", "energy_mj", "storage_bytes", "macs_ratio")
KEEP_CANDIDATES = 32  # distinct policies kept by their search reward for the confirmation (it takes up to this)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search; saved in ``config.json`` and reused by resume.

    Args:
        model: Model spec (zoo name, ``torchvision:<name>`` or ``package.module:factory``).
        dataset: A built-in dataset name, a ``.npz`` file, an image folder or ``package.module:factory`` (files are
            saved by their absolute path).
        env: Deployment preset name or YAML path.
        agent: Agent preset name or YAML path, or the name of a registered searcher.
        space: Search-space preset name or YAML path.
        episodes: Episodes to search.
        seed: Seed of everything random.
        pretrained: Load the shipped weights (when ``weights`` is not given).
        weights: A weights file of the trained model.
        data_dir: Dataset folder (CIFAR-10).
        budgets: Overrides of the preset's budgets (``{"macs_ratio": 0.5}``).
        val_images: Validation images each policy is scored on (default: the whole val split).
        storage: Optuna storage URL shared by workers (default: SQLite in the run folder).
        exp: Experiment name, the first part of the run folder's name.
        device: Where policies are scored: ``cpu``, ``cuda`` or ``auto`` (a resumed run may change it).
        workers: Environments the RL agents play at once, each in its own process (SB3's ``SubprocVecEnv``); the
            episode budget and its count are the same as with one.
        confirm: How many of the best distinct policies (by the search's score), and of the most accurate ones of
            the Pareto front, are scored again on the whole validation split before the run names its best (0: the
            search's scores stand). A slice of 1,000 images has a standard error of about 1.3 points: more than
            the gap between a search's best policies.
    """

    model: str
    dataset: str
    env: str = "host"
    agent: str = "ddpg"
    space: str = "prune-quant"
    episodes: int = 300
    seed: int = 0
    pretrained: bool = True
    weights: str | None = None
    data_dir: str | None = None
    budgets: dict[str, Any] = field(default_factory=dict)
    val_images: int | None = None
    storage: str | None = None
    exp: str = "search"
    device: str = "cpu"
    workers: int = 1
    confirm: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", canonical_ref(self.dataset))
        if self.episodes < 1:
            raise ConfigError(f"episodes >= 1 must hold, but got episodes={self.episodes}.", params=("episodes",))
        if not self.exp or any(c in self.exp for c in "/\\\0") or self.exp.startswith("."):
            raise ConfigError(
                f"exp must be a plain name (no '/', '\\' or leading '.'), but got exp={self.exp[:60]!r}; it names "
                "the run folder under the runs root (use run_dir for a path).",
                params=("exp",),
            )
        if not 0 <= self.seed < 2**32:
            raise ConfigError(
                f"0 <= seed < 2**32 must hold (numpy's and torch's seed range), but got seed={self.seed}.",
                params=("seed",),
            )
        if not 1 <= self.workers <= 64:
            raise ConfigError(
                f"1 <= workers <= 64 must hold, but got workers={self.workers}; one worker per core is a good start.",
                params=("workers",),
            )
        if not 0 <= self.confirm <= KEEP_CANDIDATES:
            raise ConfigError(
                f"0 <= confirm <= {KEEP_CANDIDATES} must hold, but got confirm={self.confirm}.", params=("confirm",)
            )
        if self.val_images is not None and self.val_images < 10:
            raise ConfigError(
                f"val_images >= 10 must hold, but got val_images={self.val_images}.", params=("val_images",)
            )
        if self.storage is not None:
            check_storage_url(self.storage)


def check_storage_url(url: str) -> None:
    """A storage URL must parse as a database URL (SQLAlchemy's rules) and a SQLite file's folder must exist;
    checked before a run folder is made (a server that is down is reported when the search opens it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(
            f"storage must be a database URL such as sqlite:///path.db or postgresql://user@host/db, but '{url}' is "
            f"not ({type(exc).__name__}: {exc}).",
            params=("storage",),
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(
                f"a SQLite storage's folder must exist, but '{folder}' does not; create it first.",
                params=("storage",),
            )


@dataclass(frozen=True)
class ResolvedPresets:
    """The presets of a search as they were when it started (what ``config.json`` keeps under ``resolved``)."""

    deployment: Deployment
    space: SpaceSpec
    agent: AgentSpec
    steps_per_episode: int
    val_images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": dataclasses.asdict(self.deployment.preset),
            "deployment": self.deployment.to_dict(),
            "space": dataclasses.asdict(self.space),
            "agent": dataclasses.asdict(self.agent),
            "steps_per_episode": self.steps_per_episode,
            "val_images": self.val_images,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ResolvedPresets:
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping of the resolved presets, but got {type(data).__name__}.")
        if "deployment" in data:
            deployment = Deployment.from_dict(data["deployment"], f"{where}.deployment")
        else:  # a run folder from before the deployment was saved: its profiles are loaded again by name
            deployment = Deployment.from_preset(from_mapping(EnvPreset, data.get("env"), f"{where}.env"))
        return cls(
            deployment,
            from_mapping(SpaceSpec, _before_reconstruction(data.get("space")), f"{where}.space"),
            from_mapping(AgentSpec, data.get("agent"), f"{where}.agent"),
            int(data.get("steps_per_episode", 0)),
            int(data.get("val_images", 0)),
        )


def _before_reconstruction(space: Any) -> Any:
    """Runs recorded before the refit existed were scored without it; say so when their record is read."""
    return space | {"reconstruct": "none"} if isinstance(space, dict) and "reconstruct" not in space else space


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


@dataclass(frozen=True)
class Episode:
    """One finished episode as a search logs it: its index in the run, the environment's result, the wall time it
    took, and what the agent adds (exploration σ, latest losses)."""

    index: int
    result: EpisodeResult
    wall_s: float
    stats: dict[str, float] = field(default_factory=dict)


class RunRecord:
    """A search's run folder, read and written through one object.

    Args:
        folder: The run folder (see :meth:`create` and :meth:`open`).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        refuse_links_out(folder)
        raw = _read_json(folder / CONFIG)
        if not isinstance(raw, dict):
            raise AutoCompressError(f"'{folder / CONFIG}' must hold a search's config as JSON, but it does not.")
        self._raw = raw
        self.rows: list[dict[str, str]] = self._load_rows()
        best = _read_json(folder / BEST)
        self.best: dict[str, Any] | None = None if best is None else _entry(best, folder / BEST)
        self.front: list[dict[str, Any]] = _read_entries(folder / PARETO)
        self.candidates: list[dict[str, Any]] = _read_entries(folder / CANDIDATES)

    # --- creating and opening ------------------------------------------------------------------------------------

    @staticmethod
    def make_folder(config: SearchConfig, env_name: str, agent_name: str, run_dir: str | Path | None) -> Path:
        """A new run folder (``run_dir``, which must be new or empty, or a fresh one under the runs root)."""
        return new_run_dir(config.exp, env_name, agent_name, config.seed, run_dir)

    @classmethod
    def create(cls, folder: Path, config: SearchConfig, resolved: ResolvedPresets) -> RunRecord:
        """Write ``config.json`` (with the resolved presets), ``command.txt`` and ``system.json``."""
        raw = dataclasses.asdict(config) | {"resolved": resolved.to_dict(), RUN_ID: uuid.uuid4().hex}
        atomic_write_json(folder / CONFIG, raw)
        (folder / "command.txt").write_text(command_line() + "\n")
        atomic_write_json(folder / "system.json", system_report())
        return cls(folder)

    @classmethod
    def open(cls, path: str | os.PathLike[str], purpose: str = "resume", trust_code: bool = False) -> RunRecord:
        """An existing run folder; ``purpose`` (``resume``, ``export``, ``compare``) names the caller in errors.

        To resume or export (which build the run's model, dataset and presets), a run whose config names code
        (``file.py:…``, ``pkg.mod:…``) is refused unless ``trust_code``: opening a folder must not run the code a
        file in it names. A file of the folder that is a symlink leading out of it is refused too.
        """
        folder = existing_run_dir(path, CONFIG, purpose)
        record = cls(folder)
        if purpose in ("resume", "export"):
            require_trust(record._untrusted_code(), f"the run '{folder}'", trust_code)
        return record

    def _untrusted_code(self) -> dict[str, Any]:
        """The run's config without a searcher reference this process registered itself (the caller's say-so)."""
        raw = json.loads(json.dumps(self._raw))
        resolved = raw.get("resolved") if isinstance(raw, dict) else None
        agent = (resolved.get("agent") if isinstance(resolved, dict) else None) or {}
        name = str(agent.get("algorithm")) if isinstance(agent, dict) else ""
        if name and registered_by_caller(name) and searcher_reference(name) == agent.get("searcher"):
            del agent["searcher"]
        return raw

    # --- what the folder holds -----------------------------------------------------------------------------------

    @property
    def config(self) -> SearchConfig:
        values = {k: v for k, v in self._raw.items() if k not in ("resolved", RUN_ID)}
        try:
            return SearchConfig(**values)
        except TypeError as exc:
            raise AutoCompressError(f"'{self.folder / CONFIG}' must hold a search config, but: {exc}.") from None

    @property
    def run_id(self) -> str:
        """The run's unique id (written when it was made; a run from before ids existed: host and folder)."""
        value = self._raw.get(RUN_ID)
        return value if isinstance(value, str) and value else f"{socket.gethostname()}:{self.folder.resolve()}"

    @property
    def resolved(self) -> ResolvedPresets:
        return ResolvedPresets.from_dict(self._raw.get("resolved"), f"{self.folder / CONFIG}: resolved")

    @property
    def episodes_done(self) -> int:
        return len(self.rows)

    @property
    def optuna_storage(self) -> str:
        """The run's own Optuna storage (SQLite in the folder)."""
        return f"sqlite:///{self.folder / 'optuna.db'}"

    @property
    def summary(self) -> dict[str, Any] | None:
        return _read_json(self.folder / SUMMARY)

    def search_wall_s(self) -> float:
        return sum(float(r["wall_s"]) for r in self.rows)

    def overview(self) -> dict[str, Any]:
        """The run's best result so far, from its record (so a running or killed run compares too)."""
        config, best = self.config, self.best or {}
        return {
            "run": self.folder.name,
            "agent": config.agent,
            "env": config.env,
            "space": config.space,
            "episodes": f"{self.episodes_done}/{config.episodes}",
            "best_reward": best.get("reward"),
            "best_accuracy": best.get("accuracy"),
            "accuracy_se": best.get("accuracy_se"),
            "macs_ratio": best.get("macs_ratio"),
            "latency_ms": best.get("latency_ms"),
            "energy_mj": best.get("energy_mj"),
            "storage_bytes": best.get("storage_bytes"),
            "best_episode": best.get("episode"),
            "search_s": round(self.search_wall_s(), 1),
        }

    def select(self, choice: str) -> dict[str, Any]:
        """The best entry (``best``) or the K-th of the Pareto front (``pareto:K``, 0 = most accurate)."""
        if choice == "best":
            if self.best is None:
                raise AutoCompressError(
                    f"the run must hold {BEST}, but '{self.folder}' has none; has it run an episode?"
                )
            return dict(self.best)
        kind, _, index = choice.partition(":")
        if kind != "pareto" or not index.isdigit():
            raise AutoCompressError(
                f"policy must be 'best' or 'pareto:K' with K a number, but got '{choice}'.", params=("policy",)
            )
        if int(index) >= len(self.front):
            raise AutoCompressError(
                f"policy pareto:K needs 0 <= K < {len(self.front)} (the front's size in '{self.folder}'), "
                f"but got K={index}.",
                params=("policy",),
            )
        return dict(self.front[int(index)])

    # --- writing -------------------------------------------------------------------------------------------------

    def add(self, episode: Episode) -> tuple[dict[str, Any], bool]:
        """Log one finished episode: a progress row, and best and Pareto front where it improves them.
        Returns the row and whether it is the new best."""
        result = episode.result
        entry = {k: getattr(result, k) for k in ENTRY_KEYS} | {"episode": episode.index, "policy": result.policy}
        entry["context"] = result.context
        improved = self.best is None or entry["reward"] > search_reward(self.best)
        if improved:
            self.best = entry
            atomic_write_json(self.folder / BEST, entry)
        front = pareto_front([*self.front, entry])
        if front != self.front:
            self.front = front
            atomic_write_json(self.folder / PARETO, front)
        self._add_candidate(entry)
        assert self.best is not None
        row: dict[str, Any] = {"episode": episode.index, "wall_s": round(episode.wall_s, 3)}
        row |= {k: entry[k] for k in ENTRY_KEYS}
        row |= {k: getattr(result, k) for k in ("peak_memory_bytes", "constraint_violations", "hard_violations")}
        row |= {"split": result.policy["split"], "adapt": result.policy["adapt"], "shift": result.context["shift"]}
        # the search's own scores, also after a confirmation (a resumed run's rows stay comparable)
        best_accuracy = self.best.get("search_accuracy", self.best["accuracy"])
        row |= {"best_reward": search_reward(self.best), "best_accuracy": best_accuracy}
        row |= {k: episode.stats.get(k, "") for k in STAT_COLUMNS}
        self._append(row)
        return row, improved

    def _add_candidate(self, entry: dict[str, Any]) -> None:
        key = policy_key(entry)
        if any(policy_key(c) == key for c in self.candidates):
            return  # a policy played again: its first score stands (the evaluator is deterministic)
        if len(self.candidates) >= KEEP_CANDIDATES and entry["reward"] <= search_reward(self.candidates[-1]):
            return
        self.candidates = sorted([*self.candidates, entry], key=lambda e: -search_reward(e))[:KEEP_CANDIDATES]
        atomic_write_json(self.folder / CANDIDATES, self.candidates)

    def to_confirm(self, count: int, images: int) -> list[dict[str, Any]]:
        """The entries a confirmation on ``images`` validation images scores: the ``count`` best candidates by
        the search's reward and the ``count`` most accurate of the Pareto front, one per policy, without the
        policies already confirmed on as many images (in any of the record's lists)."""
        known = self._confirmed(images)
        chosen = {policy_key(e): e for e in [*self.candidates[:count], *self.front[:count]]}
        return [e for key, e in chosen.items() if key not in known]

    def _confirmed(self, images: int) -> dict[str, dict[str, Any]]:
        """The confirmation fields of every policy already confirmed on ``images`` images, by policy key."""
        fields = ("accuracy", "reward", "accuracy_se", "scored_images", "search_accuracy", "search_reward")
        entries = [*self.candidates, *self.front, *([self.best] if self.best else [])]
        return {
            policy_key(e): {k: e[k] for k in (*fields, "search_images")}
            for e in entries
            if e.get("scored_images") == images and all(k in e for k in (*fields, "search_images"))
        }

    def confirm(self, scores: dict[str, tuple[float, float]], images: int, search_images: int) -> None:
        """Record a confirmation: ``scores`` maps a policy key (:func:`policy_key`) to its accuracy and reward on
        ``images`` validation images; the search scored ``search_images``. Candidates, front and best are
        rewritten (candidates first, best last, each atomically: a kill in between leaves entries that the next
        confirmation finds done); the best is the confirmed candidate with the highest confirmed reward."""
        known = self._confirmed(images) if images > search_images else {}

        def update(entry: dict[str, Any]) -> dict[str, Any]:
            key = policy_key(entry)
            if key in known and key not in scores:  # confirmed before (this list's copy may predate it)
                return entry | known[key]
            if key not in scores:
                done = entry.get("scored_images") is not None
                return entry if done else entry | se_fields(entry["accuracy"], search_images)
            accuracy, reward = scores[key]
            searched = {
                "search_accuracy": entry.get("search_accuracy", entry["accuracy"]),
                "search_reward": search_reward(entry),
                "search_images": entry.get("search_images", search_images),
            }
            return entry | searched | {"accuracy": accuracy, "reward": reward} | se_fields(accuracy, images)

        self.candidates = [update(e) for e in self.candidates]
        atomic_write_json(self.folder / CANDIDATES, self.candidates)
        self.front = pareto_front([update(e) for e in self.front])
        atomic_write_json(self.folder / PARETO, self.front)
        confirmed = [e for e in self.candidates if e.get("scored_images") == images and images > search_images]
        if confirmed:
            self.best = max(confirmed, key=lambda e: e["reward"])
        elif self.best is not None:
            self.best = update(self.best)
        if self.best is not None:
            atomic_write_json(self.folder / BEST, self.best)

    def set_episodes(self, episodes: int) -> None:
        """Raise (or lower, not below what is logged) the run's episode budget in ``config.json``."""
        self._raw = self._raw | {"episodes": episodes}
        atomic_write_json(self.folder / CONFIG, self._raw)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.folder / SUMMARY, summary)

    def _append(self, row: dict[str, Any]) -> None:
        path = self.folder / PROGRESS
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            _drop_partial_row(path)
        with path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, COLUMNS)
            if new:
                out.writeheader()
            out.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.append({k: str(v) for k, v in row.items()})

    def _load_rows(self) -> list[dict[str, str]]:
        """The logged episodes. A last row a kill cut mid-write is no episode (it is played again on resume, and
        the next append cuts it off); a file that does not start with the header, or a row that lacks columns or
        is out of sequence, is refused in one line."""
        path = self.folder / PROGRESS
        if not path.exists():
            return []
        text = read_text(path, "run file", AutoCompressError, limit=256 * 2**20)
        if not text:
            return []
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        lines = text.splitlines()
        if not lines or lines[0].split(",") != list(COLUMNS):
            raise AutoCompressError(
                f"'{path}' must start with the header {','.join(COLUMNS[:3])},…, but it does not; it is not this "
                "version's progress log (or was edited): restore it or start a new run."
            )
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        for i, row in enumerate(rows):
            if None in row or any(row.get(k) is None for k in COLUMNS) or row["episode"] != str(i):
                raise AutoCompressError(
                    f"'{path}' row {i + 2} must be episode {i} with every column, but it is not; restore the file "
                    "or start a new run."
                )
        return rows


def policy_key(entry: dict[str, Any]) -> str:
    """One string per distinct policy of an entry."""
    return json.dumps(entry["policy"], sort_keys=True)


def search_reward(entry: dict[str, Any]) -> float:
    """The reward the search gave an entry (a confirmed entry keeps it beside its confirmed reward): what a new
    episode competes with."""
    return float(entry.get("search_reward", entry["reward"]))


def se_fields(accuracy: float, images: int) -> dict[str, Any]:
    """An accuracy's standard error (binomial: √(p(1−p)/n)) and the images it was measured on."""
    return {"accuracy_se": math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(images, 1)), "scored_images": images}


def _read_entries(path: Path) -> list[dict[str, Any]]:
    entries = _read_json(path)
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise AutoCompressError(
            f"'{path}' must hold a list of entries, but holds {type(entries).__name__}; delete it and the run's "
            "next episode writes it again."
        )
    return [_entry(e, path) for e in entries]


def _drop_partial_row(path: Path) -> None:
    """Cut a last row a kill left without its line end, so the next row starts on a line of its own (only the
    last byte is read unless it must be cut: this runs before every appended row)."""
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        handle.truncate(handle.read().rfind(b"\n") + 1)


def _entry(value: Any, path: Path) -> dict[str, Any]:
    """A best or Pareto entry as :meth:`RunRecord.add` writes it: a mapping with a numeric reward and a policy."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("policy"), dict)
        or not isinstance(value.get("reward"), (int, float))
    ):
        raise AutoCompressError(
            f"'{path}' must hold entries with a policy and a reward as the search writes them, but it does not; "
            "delete it and resume the run (its next episode writes it again) or restore it."
        )
    return value


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    return read_json(path, "run file", AutoCompressError)
