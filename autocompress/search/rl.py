"""Reinforcement-learning agents from stable-baselines3 (DDPG, TD3, SAC, PPO) on the compression environment,
with AMC's recipe added through SB3's extension points and checkpoints that need no unpickling to resume."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from autocompress.errors import AutoCompressError, ConfigError
from autocompress.files import read_json, short, why
from autocompress.runs import atomic_torch_save, atomic_write_json
from autocompress.search.base import SearchContext, Searcher, check_keywords
from autocompress.search.baselines import check_warm_start, one_shot_start
from autocompress.search.sb3_extensions import (
    DecayingNormalNoise,
    EpisodeCallback,
    EpisodeRewardReplayBuffer,
    ScriptedDDPG,
    ScriptedSAC,
    ScriptedStart,
    ScriptedTD3,
    SharedScheduleNoise,
)

if TYPE_CHECKING:
    from autocompress.env import AutoCompressEnv
    from autocompress.search.job import SearchJob

log = logging.getLogger(__name__)
OFF_POLICY = {"ddpg": ScriptedDDPG, "td3": ScriptedTD3, "sac": ScriptedSAC}
PENDING = "journal.npz"  # the transitions played since the last checkpoint (see Checkpoint)


def _worker_env(factory: Callable[[], AutoCompressEnv], threads: int) -> AutoCompressEnv:
    """Runs in a worker process: the worker ignores Ctrl-C (the search process handles it and closes the workers,
    instead of every worker printing its own interrupt) and shares the cores with the others."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    return factory()


def make_vec_env(context: SearchContext, workers: int | None = None) -> VecEnv:
    """The environments the agent plays: the search's own in this process for one worker, else ``workers`` copies
    built by ``context.env_factory`` in subprocesses (SB3's ``SubprocVecEnv``), the cores split between them."""
    workers = context.workers if workers is None else workers
    if workers == 1:
        return DummyVecEnv([lambda: context.env])
    if context.env_factory is None:
        raise ValueError("parallel workers need the context's env_factory (SearchJob.context() provides it).")
    threads = max(1, torch.get_num_threads() // workers)
    return SubprocVecEnv([functools.partial(_worker_env, context.env_factory, threads)] * workers)


def build_model(context: SearchContext, workers: int | None = None) -> tuple[BaseAlgorithm, DecayingNormalNoise | None]:
    """The SB3 model of the agent preset, wired to ``workers`` environments (default: the search's)."""
    agent, steps, seed = context.agent, context.steps, context.seed
    params = dict(agent.hyperparameters)
    net_arch = list(params.pop("net_arch", [300, 300]))
    params.pop("warm_start", None)  # autocompress's own (SB3Searcher.setup), not SB3's
    params.pop("warm_spread", None)
    env = make_vec_env(context, workers)
    n_envs = env.num_envs
    common: dict[str, Any] = {"env": env, "seed": seed, "verbose": 0, "device": "cpu"}
    if agent.algorithm == "ppo":
        # n_steps counts steps per environment: N workers gather the preset's episodes per update between them.
        n_steps = math.ceil(agent.episodes_per_update / n_envs) * steps
        # SB3 wants the mini-batch to divide the rollout; take the largest divisor not above the preset's size.
        wanted = int(params.pop("batch_size", 64))
        batch = max(d for d in range(1, min(wanted, n_steps * n_envs) + 1) if n_steps * n_envs % d == 0)
        policy_kwargs = {"net_arch": {"pi": net_arch, "vf": net_arch}}
        return PPO(
            "MlpPolicy", n_steps=n_steps, batch_size=batch, policy_kwargs=policy_kwargs, **common, **params
        ), None
    warmup = agent.warmup_for(context.episodes)
    # N environments step together, so the warm-up ends on a batch boundary (never half a batch of random layers)
    warmup = math.ceil(warmup / n_envs) * n_envs
    noise = None
    if agent.algorithm in ("ddpg", "td3"):
        noise = DecayingNormalNoise(context.space.action_dim, agent.noise_sigma, agent.noise_decay, warmup, seed)
        params["action_noise"] = noise if n_envs == 1 else SharedScheduleNoise(noise, n_envs)
    model = OFF_POLICY[agent.algorithm](
        "MlpPolicy",
        buffer_size=max(agent.buffer_episodes * steps, steps * n_envs),
        learning_starts=warmup * steps,
        # Every episode has `steps` steps and the environments start together, so `steps` steps per environment
        # are one episode each (SB3 refuses an episode train_freq with several environments).
        train_freq=(1, "episode") if n_envs == 1 else (steps, "step"),
        gradient_steps=-1,
        replay_buffer_class=EpisodeRewardReplayBuffer,
        replay_buffer_kwargs={"baseline_decay": agent.baseline_decay},
        policy_kwargs={"net_arch": net_arch},
        **common,
        **params,
    )
    return model, noise


class Checkpoint(BaseCallback):
    """Save the agent (parameters and optimizers as tensors, replay buffer as numpy arrays, counters as JSON) at
    the start of every rollout, i.e. after the previous episodes were stored and trained on.

    Between two checkpoints it keeps a journal of the off-policy agents' transitions (:data:`PENDING`), written
    whenever an episode ends — before the run logs that episode (this callback runs before the one that logs): a
    kill after the log and before the next checkpoint loses no transition, and a resumed agent adds the logged
    episodes' ones to its replay buffer (:func:`load_agent_state`), in step with the log."""

    def __init__(self, folder: Path, noise: DecayingNormalNoise | None, episodes: Any) -> None:
        super().__init__()
        self.folder, self.noise, self.episodes = folder, noise, episodes
        self.journal: list[tuple[np.ndarray, ...]] = []
        self.base = 0

    def _on_rollout_start(self) -> None:
        self.base = self.episodes()
        save_agent(self.model, self.noise, self.folder, self.base)
        self.journal = []
        (self.folder / PENDING).unlink(missing_ok=True)  # the checkpoint holds them now

    def _on_step(self) -> bool:
        if not isinstance(getattr(self.model, "replay_buffer", None), EpisodeRewardReplayBuffer):
            return True
        local = self.locals
        dones = np.asarray(local["dones"])
        next_obs = np.array(local["new_obs"], copy=True)
        for i, done in enumerate(dones):  # as SB3 stores a finished episode: its terminal observation, not the reset
            terminal = local["infos"][i].get("terminal_observation") if done else None
            if terminal is not None:
                next_obs[i] = terminal
        row = (
            np.array(self.model._last_obs),
            next_obs,
            np.array(local["buffer_actions"]),
            np.asarray(local["rewards"], np.float32),
            dones.astype(np.float32),
        )
        self.journal.append(row)
        if dones.any():
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{PENDING}.partial"
            names = ("obs", "next_obs", "actions", "rewards", "dones")
            arrays: dict[str, Any] = {name: np.stack([r[k] for r in self.journal]) for k, name in enumerate(names)}
            with partial.open("wb") as handle:
                np.savez(handle, base=np.array(self.base), **arrays)
            partial.replace(self.folder / PENDING)
        return True


def save_agent(model: BaseAlgorithm, noise: DecayingNormalNoise | None, folder: Path, episodes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(folder / "agent.pt", model.get_parameters())
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, EpisodeRewardReplayBuffer):
        tmp = folder / "replay.tmp.npz"
        buffer.save_arrays(tmp)
        tmp.replace(folder / "replay.npz")
    state = {"num_timesteps": model.num_timesteps, "episodes": episodes, "noise": noise.state() if noise else None}
    atomic_write_json(folder / "agent.json", state)


def load_agent_state(
    model: BaseAlgorithm, noise: DecayingNormalNoise | None, folder: Path, replay: bool = True, logged: int = 0
) -> int:
    """Restore a checkpoint (with its replay buffer unless ``replay`` is false); returns the episodes it holds
    (0 when there is none). Episodes the run logged (``logged``) after the checkpoint was saved are added from the
    journal (:class:`Checkpoint`): their transitions to the replay buffer, their decay to the noise."""
    if not (folder / "agent.json").exists():
        return 0
    try:
        state = read_json(folder / "agent.json", "agent checkpoint", AutoCompressError)
        episodes, timesteps = int(state["episodes"]), int(state["num_timesteps"])
        model.set_parameters(torch.load(folder / "agent.pt", map_location="cpu", weights_only=True), exact_match=True)
        buffer = getattr(model, "replay_buffer", None)
        if replay and isinstance(buffer, EpisodeRewardReplayBuffer) and (folder / "replay.npz").exists():
            buffer.load_arrays(folder / "replay.npz")
        if noise is not None and state.get("noise"):
            noise.restore(state["noise"])
    except AutoCompressError:
        raise
    except Exception as exc:
        raise AutoCompressError(
            f"the agent checkpoint in '{folder}' must be whole, but it cannot be loaded ({why(exc, 40)}); delete "
            "that folder to resume with a fresh agent (the logged episodes stay)."
        ) from None
    if replay and logged > episodes:
        episodes += _replay_journal(model, noise, folder, episodes, logged - episodes)
    model.num_timesteps = timesteps
    model._episode_num = episodes
    return episodes


def _replay_journal(
    model: BaseAlgorithm, noise: DecayingNormalNoise | None, folder: Path, base: int, wanted: int
) -> int:
    """Add the journal's transitions of up to ``wanted`` logged episodes after checkpoint ``base``; returns how
    many episodes that was (0 without a journal of that checkpoint)."""
    buffer = getattr(model, "replay_buffer", None)
    path = folder / PENDING
    if not isinstance(buffer, EpisodeRewardReplayBuffer) or not path.is_file():
        return 0
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["base"]) != base:
                return 0  # a journal of another checkpoint
            rows = [data[k] for k in ("obs", "next_obs", "actions", "rewards", "dones")]
    except Exception:  # a journal a kill cut: the episodes stay logged, the agent does without them
        log.warning("the agent's journal %s cannot be read; the resumed agent misses its last episodes", path)
        return 0
    added = 0
    for obs, next_obs, actions, rewards, dones in zip(*rows, strict=True):
        if added >= wanted:
            break
        buffer.add(obs, next_obs, actions, rewards, dones, [{} for _ in range(len(dones))])
        for _ in range(int(dones.sum())):
            added += 1
            if noise is not None:
                noise.reset()
    log.info("added %d logged episode(s) from the agent's journal to the resumed replay buffer", added)
    return added


class SB3Searcher(Searcher):
    """DDPG, TD3, SAC or PPO from stable-baselines3 on the environment, with AMC's recipe (warm-up, decaying
    truncated noise, episode reward minus a moving baseline for every transition) added through SB3's extension
    points. The agent is checkpointed into ``checkpoints/`` at the start of every rollout (after the previous
    episodes were stored and trained on) and at the end; a resumed run restores it.

    With ``context.workers`` = N > 1 the agent plays N environments at once, each in its own process: a rollout is
    one episode per environment, the replay buffer and the noise schedule are shared, and the run logs exactly its
    episode budget (a last batch that overshoots it is played but not logged)."""

    parallel_envs = True
    model: BaseAlgorithm
    noise: DecayingNormalNoise | None

    def check(self) -> None:
        agent = self.agent
        common = {"seed": "--seed", "verbose": "logging", "device": "--device", "policy_kwargs": "use net_arch"}
        if agent.algorithm == "ppo":
            if agent.hyperparameters.get("warm_start", "none") != "none" or agent.hyperparameters.get("warm_spread"):
                raise ConfigError(
                    f"agent '{agent.name}' hyperparameters: warm_start (and warm_spread) need an agent that learns "
                    "from any episode (ddpg, td3, sac, tpe, nsga2), but PPO learns from its own policy's actions "
                    "only; remove them or use ddpg."
                )
            reserved = common | {"n_steps": "from episodes_per_update"}
            check_keywords(agent, PPO, reserved, {"net_arch": [300, 300], "warm_start": "none", "warm_spread": 0.0})
        else:
            reserved = common | {
                "buffer_size": "from buffer_episodes",
                "learning_starts": "from warmup_episodes",
                "train_freq": "one episode",
                "gradient_steps": "one per step",
                "replay_buffer_class": "AMC's baseline-subtracted buffer",
                "replay_buffer_kwargs": "from baseline_decay",
                "action_noise": "from noise_sigma and noise_decay",
            }
            extras = {"net_arch": [300, 300], "warm_start": "none", "warm_spread": 0.0}
            check_keywords(agent, OFF_POLICY[agent.algorithm], reserved, extras)
            check_warm_start(agent)
        arch = agent.hyperparameters.get("net_arch", [300, 300])
        if not (
            isinstance(arch, list)
            and len(arch) <= 16
            and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65536 for n in arch)
        ):
            raise ConfigError(
                f"agent '{agent.name}' hyperparameters: net_arch must be a list of layer widths (integers 1..65536, "
                f"at most 16), but got {short(arch)}; e.g. net_arch: [300, 300]."
            )

    def setup(self, context: SearchContext) -> None:
        from stable_baselines3.common.logger import Logger

        self.model, self.noise = build_model(context)
        try:
            # SB3's default logger creates an empty SB3-<time> folder in the system temp directory on every learn();
            # the run folder already records everything (progress.csv, TensorBoard), so its logger writes nowhere.
            self.model.set_logger(Logger(folder=None, output_formats=[]))
            restored = load_agent_state(self.model, self.noise, context.checkpoint_dir, logged=context.episodes_done)
            self.model.num_timesteps = max(self.model.num_timesteps, context.episodes_done * context.steps)
            self._warm_start(context, fresh=not restored and not context.episodes_done)
        except BaseException:
            close_workers(self.model.env)
            raise
        if restored:
            log.info("resumed agent after %d episodes (%d logged)", restored, context.episodes_done)

    def _warm_start(self, context: SearchContext, fresh: bool) -> None:
        """A new run's first episode plays the one-shot agent's policy (logged, scored, in the replay buffer as the
        agent's own); with ``warm_spread`` the warm-up's episodes (a resumed run's rest of them too) explore near it."""
        warm = self.agent.hyperparameters.get("warm_start", "none")
        spread = float(self.agent.hyperparameters.get("warm_spread", 0.0))
        model = self.model
        warming = spread > 0 and model.num_timesteps < getattr(model, "learning_starts", 0)
        if warm == "none" or not isinstance(model, ScriptedStart) or not (fresh or warming):
            return
        actions = context.space.actions_from_params(one_shot_start(str(warm), context))
        if fresh:
            model.script = list(actions)
            log.info("the first episode plays the policy %s would (warm start)", warm)
        if warming:
            model.center, model.spread = list(actions), spread
            model.spread_rng = np.random.default_rng([context.seed, context.episodes_done])
            # the environments were just reset: every episode's steps count from here, whatever the counter holds
            model.spread_origin = model.num_timesteps

    def search(self, context: SearchContext, episodes: int) -> None:
        callbacks = CallbackList(
            [  # the checkpoint's journal records an episode before the other callback logs it
                Checkpoint(context.checkpoint_dir, self.noise, lambda: context.episodes_done),
                EpisodeCallback(context.report, self.noise),
            ]
        )
        try:
            self.model.learn(total_timesteps=episodes * context.steps, callback=callbacks, reset_num_timesteps=False)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise AutoCompressError(
                "a worker process of the search ended unexpectedly (its error, if any, is printed above); the run "
                "resumes with --resume RUN, and --workers 1 shows such an error where it happens."
            ) from None
        # Only a search that ran to its end saves here: after an interruption the replay buffer may hold part of
        # an episode, and the checkpoint from the last rollout start is the consistent one.
        save_agent(self.model, self.noise, context.checkpoint_dir, context.episodes_done)
        (context.checkpoint_dir / PENDING).unlink(missing_ok=True)

    def teardown(self, context: SearchContext) -> None:
        close_workers(self.model.env)


def close_workers(env: VecEnv | None) -> None:
    """End the worker processes. SB3's ``close`` first reads the answer of a step in flight, which may already have
    been read when the step was interrupted (Ctrl-C), or never come when a worker died: then every worker is told to
    close and given time to finish its step and exit (its answer waits unread in the pipe); one that does not is
    terminated."""
    if env is None:
        return
    if isinstance(env, SubprocVecEnv) and env.waiting:
        for remote in env.remotes:
            with contextlib.suppress(OSError):
                remote.send(("close", None))
        for process in env.processes:
            process.join(60)
            if process.is_alive():
                process.terminate()
                process.join(5)
        env.closed = True
        return
    try:
        env.close()
    except (EOFError, OSError):
        for process in getattr(env, "processes", []):
            process.terminate()


def trained_model(job: SearchJob) -> BaseAlgorithm:
    """The SB3 agent of a run as last checkpointed, e.g. to roll out its deterministic actor in chosen contexts."""
    context = job.context()
    model, noise = build_model(context, workers=1)  # the actor only: no worker processes, no replay buffer
    load_agent_state(model, noise, context.checkpoint_dir, replay=False)
    return model
