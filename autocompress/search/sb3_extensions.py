"""The pieces AMC's DDPG recipe needs that stable-baselines3 lacks, added through SB3's extension points
(action noise, replay buffer class, callbacks) rather than by forking the algorithms."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise, VectorizedActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm


class DecayingNormalNoise(ActionNoise):
    """Gaussian exploration noise truncated at ±2σ whose σ decays once per episode after the warm-up (AMC).

    SB3 adds the noise to the actor's action and clips the sum into the action bounds; an ``ActionNoise`` never
    sees the action, so it cannot truncate around it as AMC's sampler does — clipping plays that role.

    Args:
        dim: Action dimensions.
        sigma: Initial standard deviation.
        decay: Factor applied to σ at the end of every episode after ``warmup`` episodes.
        warmup: Episodes of uniform random actions (SB3's ``learning_starts``), during which σ stays put.
        seed: Seed of the noise generator.
    """

    def __init__(self, dim: int, sigma: float, decay: float, warmup: int, seed: int) -> None:
        super().__init__()
        self.dim, self.sigma, self.decay, self.warmup = dim, sigma, decay, warmup
        self.episodes = 0
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> np.ndarray:
        return np.clip(self.rng.normal(0.0, self.sigma, self.dim), -2 * self.sigma, 2 * self.sigma).astype(np.float32)

    def reset(self) -> None:
        self.episodes += 1
        if self.episodes > self.warmup:
            self.sigma *= self.decay

    def state(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "episodes": self.episodes}

    def restore(self, state: dict[str, Any]) -> None:
        self.sigma, self.episodes = float(state["sigma"]), int(state["episodes"])


class SharedScheduleNoise(VectorizedActionNoise):
    """The exploration noise of ``n_envs`` environments played at once, on one schedule: σ decays once per finished
    episode of any environment, so N workers explore over a run's episodes as one worker does.

    SB3 would wrap a plain ``ActionNoise`` in a ``VectorizedActionNoise`` of N deep copies, each decaying on its own
    environment's episodes only (σ would fall N times slower) and invisible to the checkpoint; this subclass keeps
    the one :class:`DecayingNormalNoise` the search reports and saves.
    """

    def __init__(self, base: DecayingNormalNoise, n_envs: int) -> None:
        self.base, self.n_envs = base, n_envs  # the parent's __init__ would make the copies this class avoids

    def __call__(self) -> np.ndarray:
        return np.stack([self.base() for _ in range(self.n_envs)])

    def reset(self, indices: Iterable[int] | None = None) -> None:
        for _ in range(self.n_envs) if indices is None else indices:
            self.base.reset()

    def __repr__(self) -> str:
        return f"SharedScheduleNoise({self.base!r}, n_envs={self.n_envs})"


class EpisodeRewardReplayBuffer(ReplayBuffer):
    """A replay buffer that gives every transition of an episode the episode's final reward minus a moving-average
    baseline, and marks each transition terminal, as AMC does: the critic then regresses Q(state, action) of every
    layer decision on the episode's advantage, with no bootstrapping across layers. With several environments
    (``n_envs``), each one's episode is tracked in its own column; the baseline moves over the episodes in the
    order they finish.

    Args:
        baseline_decay: Weight of the old baseline in the moving average (AMC: 0.95).
        (the rest as :class:`~stable_baselines3.common.buffers.ReplayBuffer`)
    """

    def __init__(self, *args: Any, baseline_decay: float = 0.95, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline_decay = baseline_decay
        self.baseline: float | None = None
        self._episode: list[list[int]] = [[] for _ in range(self.n_envs)]

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        position = self.pos
        super().add(obs, next_obs, action, reward, np.ones_like(done), infos)
        finals = np.asarray(reward, dtype=np.float64).reshape(-1)
        for env, finished in enumerate(np.asarray(done).reshape(-1)):
            self._episode[env].append(position)
            if not finished:
                continue
            final = float(finals[env])
            self.baseline = (
                final
                if self.baseline is None
                else self.baseline_decay * self.baseline + (1 - self.baseline_decay) * final
            )
            for index in self._episode[env]:
                self.rewards[index, env] = final - self.baseline
            self._episode[env] = []

    def save_arrays(self, path: Path) -> None:
        """Write the buffer's contents as a numpy archive (no pickle)."""
        np.savez(
            path,
            observations=self.observations,
            next_observations=self.next_observations,
            actions=self.actions,
            rewards=self.rewards,
            dones=self.dones,
            timeouts=self.timeouts,
            meta=np.array([self.pos, int(self.full), np.nan if self.baseline is None else self.baseline]),
        )

    def load_arrays(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                getattr(self, name)[...] = data[name]
            pos, full, baseline = data["meta"]
        self.pos, self.full = int(pos), bool(full)
        self.baseline = None if np.isnan(baseline) else float(baseline)
        self._episode = [[] for _ in range(self.n_envs)]


class EpisodeCallback(BaseCallback):
    """Hands every finished episode's ``info`` (with the agent's latest losses and exploration σ) to a function, and
    stops training once the search's episode budget is reached."""

    LOSSES: ClassVar[dict[str, str]] = {
        "train/actor_loss": "actor_loss",
        "train/critic_loss": "critic_loss",
        "train/policy_gradient_loss": "policy_loss",
        "train/value_loss": "value_loss",
    }

    def __init__(
        self, on_episode: Callable[[dict[str, Any], float, dict[str, float]], bool], noise: DecayingNormalNoise | None
    ) -> None:
        super().__init__()
        self.on_episode, self.noise = on_episode, noise
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        finished = [info for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True) if done]
        if not finished:
            return True
        logged = self.model.logger.name_to_value
        extra = {name: float(v) for key, name in self.LOSSES.items() if (v := logged.get(key)) is not None}
        if self.noise is not None:
            extra["exploration_sigma"] = self.noise.sigma
        # Environments played at once finish their episodes together; each is charged its share of the wall time.
        wall = (time.perf_counter() - self.started) / len(finished)
        self.started = time.perf_counter()
        # Once the budget is spent, the rest of a parallel batch is played but not logged (all() stops at the first
        # refusal): the run counts exactly the episodes it was asked for.
        return all(self.on_episode(info, wall, extra) for info in finished)


class ScriptedStart(OffPolicyAlgorithm):
    """An off-policy algorithm whose first actions on environment 0 are given (:attr:`script`, one per step, in the
    environment's units): the search's warm start plays the policy a one-shot agent would as its first episode,
    through SB3's own step loop, so that episode is logged, scored and stored in the replay buffer like any other
    (its action as the agent's buffer holds actions: scaled to [-1, 1]). SB3 has no hook for a scripted action,
    hence the override of ``_sample_action``; it changes nothing once the script is played.

    With :attr:`center` (one action per step) and :attr:`spread` > 0, every warm-up step (before ``learning_starts``)
    on every environment plays the center's action for that step plus a normal step of ``spread`` in the scaled
    space (clipped to [-1, 1]) instead of SB3's uniform draw over the whole space: the warm-up explores around the
    warm start, and the critic first learns the rewards there."""

    script: list[np.ndarray]
    center: list[np.ndarray] | None = None
    spread: float = 0.0
    spread_rng: np.random.Generator | None = None
    spread_origin: int = 0

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        action, buffer_action = super()._sample_action(learning_starts, action_noise, n_envs)
        center, rng = self.center, self.spread_rng
        if center and rng is not None and self.spread > 0 and self.num_timesteps < learning_starts:
            low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
            # the environments step together from their resets and every episode has len(center) steps
            step = ((self.num_timesteps - self.spread_origin) // n_envs) % len(center)
            middle = self.policy.scale_action(np.clip(np.asarray(center[step], dtype=action.dtype), low, high))
            moved = np.clip(middle + rng.normal(0.0, self.spread, (n_envs, *middle.shape)), -1.0, 1.0)
            buffer_action = moved.astype(buffer_action.dtype)
            action = self.policy.unscale_action(buffer_action)
        script = getattr(self, "script", None)
        if script:
            low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
            played = np.clip(np.asarray(script.pop(0), dtype=action.dtype), low, high)
            action, buffer_action = action.copy(), buffer_action.copy()
            action[0] = played
            buffer_action[0] = self.policy.scale_action(played)
        return action, buffer_action


class ScriptedDDPG(ScriptedStart, DDPG):
    """DDPG that can play a scripted first episode (:class:`ScriptedStart`)."""


class ScriptedTD3(ScriptedStart, TD3):
    """TD3 that can play a scripted first episode (:class:`ScriptedStart`)."""


class ScriptedSAC(ScriptedStart, SAC):
    """SAC that can play a scripted first episode (:class:`ScriptedStart`)."""
