"""Search callbacks (in the spirit of SB3's ``BaseCallback``): what happens around the episodes of a search —
the run record, TensorBoard, the progress display — and what users add (early stopping, their own logging).

Pass your own to :meth:`SearchJob.run <autocompress.search.job.SearchJob.run>`; they run after the built-in ones,
so the run record already holds the episode when they see it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from autocompress.search.agents import AgentSpec
from autocompress.search.record import Episode, RunRecord, SearchConfig

log = logging.getLogger(__name__)
FIGURE_EVERY = 25


class SearchJob(Protocol):
    """What a callback sees of the running :class:`autocompress.search.job.SearchJob` (a protocol: the job imports
    the callbacks, not the reverse)."""

    config: SearchConfig
    record: RunRecord
    agent: AgentSpec
    env: Any  # the job's AutoCompressEnv

    @property
    def run_dir(self) -> Path: ...


class SearchCallback:
    """Base class of search callbacks.

    Lifecycle, as :meth:`SearchJob.run <autocompress.search.job.SearchJob.run>` calls it:

    1. :meth:`on_search_start` — once per session, before the first episode; ``self.job`` is set before it.
    2. :meth:`on_episode_end` — after every finished episode, in the order the callbacks were given; return
       ``False`` to stop the search after this episode (it stays resumable).
    3. :meth:`on_search_end` — once, with the summary, or with ``None`` when the search ended by an exception or
       Ctrl-C (close what you opened either way).
    """

    job: SearchJob

    def init_callback(self, job: SearchJob) -> None:
        self.job = job

    def on_search_start(self) -> None:
        """Called once before the first episode of this session."""

    def on_episode_end(self, episode: Episode) -> bool:
        """Called after each finished episode; return ``False`` to stop."""
        return True

    def on_search_end(self, summary: dict[str, Any] | None) -> None:
        """Called once at the end (``summary`` is ``None`` after an exception)."""

    @property
    def record(self) -> RunRecord:
        return self.job.record


class CallbackList(SearchCallback):
    """Several callbacks called in order; the search stops when any of them returns ``False``."""

    def __init__(self, callbacks: list[SearchCallback]) -> None:
        self.callbacks = callbacks

    def init_callback(self, job: SearchJob) -> None:
        super().init_callback(job)
        for callback in self.callbacks:
            callback.init_callback(job)

    def on_search_start(self) -> None:
        for callback in self.callbacks:
            callback.on_search_start()

    def on_episode_end(self, episode: Episode) -> bool:
        return all([callback.on_episode_end(episode) for callback in self.callbacks])  # every one sees every episode

    def on_search_end(self, summary: dict[str, Any] | None) -> None:
        for callback in self.callbacks:
            callback.on_search_end(summary)


class RecordCallback(SearchCallback):
    """Writes each episode to the run record: ``progress.csv``, ``best_policy.json``, ``pareto.json``."""

    def on_episode_end(self, episode: Episode) -> bool:
        self.record.add(episode)
        return True


class ProgressCallback(SearchCallback):
    """A progress bar with the best reward and accuracy so far (on a terminal), else a log line every 10 episodes."""

    bar: tqdm | None = None

    def on_search_start(self) -> None:
        total = self.job.config.episodes
        agent = self.job.agent.name
        self.bar = tqdm(total=total, initial=self.record.episodes_done, desc=f"search {agent}", unit="ep", disable=None)

    def on_episode_end(self, episode: Episode) -> bool:
        best = self.record.best or {}
        if self.bar is not None and not self.bar.disable:
            self.bar.update(1)
            self.bar.set_postfix(best_reward=f"{best['reward']:.4f}", best_acc=f"{best['accuracy']:.4f}")
            return True
        done, total = self.record.episodes_done, self.job.config.episodes
        if done % 10 == 0 or done == total:
            log.info(
                "episode %d/%d: best reward %.4f, best accuracy %.4f", done, total, best["reward"], best["accuracy"]
            )
        return True

    def on_search_end(self, summary: dict[str, Any] | None) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardCallback(SearchCallback):
    """TensorBoard scalars (``charts/``, ``losses/``), the best policy and the Pareto front as figures, and the
    hyperparameters with the run's best results, written into the run folder.

    Args:
        hparams: Hyperparameters shown in TensorBoard's HParams tab.
    """

    SCALARS = ("reward", "accuracy", "latency_ms", "energy_mj", "storage_bytes", "macs_ratio", "peak_memory_bytes")

    def __init__(self, hparams: dict[str, Any]) -> None:
        self.hparams = hparams
        self.writer: Any = None
        self.pareto_drawn_at = -1  # the episode after which this process last drew the Pareto figure

    def on_search_start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run wrote after its last completed episode.
        self.writer = SummaryWriter(str(self.record.folder), purge_step=self.record.episodes_done or None)

    def on_episode_end(self, episode: Episode) -> bool:
        w, row, step = self.writer, self.record.rows[-1], episode.index
        for key in self.SCALARS:
            w.add_scalar(f"charts/{'episode_reward' if key == 'reward' else key}", float(row[key]), step)
        for key in ("best_reward", "best_accuracy", "constraint_violations"):
            w.add_scalar(f"charts/{key}", float(row[key]), step)
        if row["exploration_sigma"] != "":
            w.add_scalar("charts/exploration_sigma", float(row["exploration_sigma"]), step)
        for loss in ("actor_loss", "critic_loss", "policy_loss", "value_loss"):
            if row[loss] != "":
                w.add_scalar(f"losses/{loss}", float(row[loss]), step)
        best = self.record.best
        if best is not None and best["episode"] == episode.index:
            w.add_figure("policy/best", policy_figure(best), step)
        if (step + 1) % FIGURE_EVERY == 0:  # after every 25 episodes (and at the end): a front of one is no figure
            w.add_figure("pareto/front", pareto_figure(self.record.rows, self.record.front), step)
            self.pareto_drawn_at = step
        w.flush()
        return True

    def on_search_end(self, summary: dict[str, Any] | None) -> None:
        if self.writer is None:
            return
        record = self.record
        confirmed = [e for e in record.candidates if "search_accuracy" in e]
        last = record.episodes_done - 1
        if record.rows and (last != self.pareto_drawn_at or confirmed):  # confirmation may have moved the front
            self.writer.add_figure("pareto/front", pareto_figure(record.rows, record.front), last)
        if confirmed:
            self.writer.add_text("confirm/candidates", confirmation_table(confirmed), last)
        if record.best is not None:
            metrics = {"hparams/best_reward": record.best["reward"], "hparams/best_accuracy": record.best["accuracy"]}
            if record.best.get("accuracy_se") is not None:
                metrics["hparams/best_accuracy_se"] = record.best["accuracy_se"]
            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hparams.items()}
            self.writer.add_hparams(clean, metrics, run_name=".")
        self.writer.close()


def confirmation_table(entries: list[dict[str, Any]]) -> str:
    """A markdown table of confirmed entries: the search's score beside the confirmed one and its error."""
    lines = [
        "| episode | search accuracy (images) | confirmed accuracy ± se (images) | search reward | confirmed reward |",
        "|---|---|---|---|---|",
    ]
    for e in sorted(entries, key=lambda e: -e["reward"]):
        lines.append(
            f"| {e['episode']} | {e['search_accuracy']:.4f} ({e['search_images']}) | {e['accuracy']:.4f} ± "
            f"{e['accuracy_se']:.4f} ({e['scored_images']}) | {e['search_reward']:.4f} | {e['reward']:.4f} |"
        )
    return "\n".join(lines)


def policy_figure(entry: dict[str, Any]) -> Any:
    """Per-layer keep ratio (bars), techniques' values (dotted) and weight/activation bits (lines) of a policy."""
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
    techniques = sorted({k for s in settings for k in s if k not in ("keep", "wbits", "abits")})
    for k, name in enumerate(techniques):  # a registered technique's value per layer (1: off), beside keep
        ax.plot(range(len(names)), [s.get(name, 1.0) for s in settings], "^:", color=f"C{4 + k}", label=name)
    handles = [h for axis in (ax, twin) for h in axis.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=6, loc="lower left")
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
