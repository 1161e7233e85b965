"""The Gymnasium environment ``AutoCompress/Compress-v0``."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from autocompress.compress.adaptation import AdaptationCost, adaptation_method
from autocompress.compress.policy import LayerSetting, Policy
from autocompress.compress.techniques import technique_shapes
from autocompress.data.shifts import Shift
from autocompress.env.budgets import Assignment, BudgetGuard, resources
from autocompress.env.context import Context, override_context, sample_context, worst_context
from autocompress.env.deployment import Deployment
from autocompress.env.episode import EpisodeResult
from autocompress.env.presets import EnvPreset, SpaceSpec, load_space_preset
from autocompress.env.rewards import compute_reward
from autocompress.env.search_space import SearchSpace
from autocompress.env.workload import Workload, build_workload
from autocompress.errors import ConfigError

LAYER_FEATURES = 17
CONTEXT_FEATURES = 6
KINDS = ("conv", "depthwise", "linear")


class AutoCompressEnv(gym.Env[np.ndarray, np.ndarray]):
    """
    ## Description

    Compress a trained network for a device, layer by layer, in the style of AMC (He et al. 2018) and HAQ (Wang et
    al. 2019): each step visits one layer and decides how many of its output channels to keep and how many bits its
    weights and activations use; the first step also chooses where to split the network between device and edge
    server (so that the budget clipping of every later layer accounts for it), the last step whether to run
    test-time adaptation (AdaBN or TENT) on drifted data. At the end, the policy is
    applied for real (channels removed, weights and activations fake-quantized, adaptation run) and scored on a
    cached validation slice; the device's latency, energy, storage and memory come from the calibrated cost model.

    ## Action Space

    ``Box(-1, 1, (d,), float32)`` with one component per knob the search space turns, in the order keep, wbits,
    abits, the space's techniques (``rank``, ...), split, adapt. ``keep`` and each technique map linearly onto
    their [min, max]; the others pick from their choices in equal bins. Components a step does not use are ignored
    (split is read at the first step, adapt at the last).

    ## Observation Space

    ``Box(0, 1, (23,), float32)``: the layer embedding — step index, type (conv, depthwise, linear; one-hot), in and
    out channels, kernel, stride, feature-map size, MACs, parameters (each normalised by its maximum over the
    model), MACs removed so far and MACs remaining (fractions of the total), the previous step's keep, weight bits
    and activation bits, and whether this is the last step — then the context: battery level, free-memory
    fraction, latency budget and energy budget (relative to the uncompressed model on the device, capped at 1),
    link bandwidth (log scale, 1 = 1 Gbit/s) and the drift score of the current input (capped at 1).

    ## Rewards

    0 on every step but the last. The last step's reward is chosen by the environment preset: ``acc``,
    ``acc_log_cost``, ``weighted`` or ``constrained`` (see :mod:`autocompress.env.rewards`). Hard budgets hold by
    construction: every choice is clipped so that the budgets stay reachable if all later steps take their minimum.

    ## Starting State

    The uncompressed model; a context (battery, free memory, bandwidth, latency budget, input shift) is drawn from
    the preset's distribution with the environment's ``np_random``. ``reset(options={"context": {...}})`` fixes
    some of its fields instead (e.g. ``{"shift": "gaussian_noise:5", "battery": 0.3}``), to evaluate a trained
    agent in a chosen context.

    ## Episode End

    The episode terminates after the last decision step (one per layer that has a decision in the space). It is
    never truncated. ``info`` at the end is an :class:`~autocompress.env.episode.EpisodeResult` as a dict
    (``accuracy``, ``reward``, ``latency_ms``, ``energy_mj``, ``storage_bytes``, ``macs``, ``macs_ratio``,
    ``peak_memory_bytes``, ``fits``, ``constraint_violations``, ``violated``, ``policy`` (the JSON document),
    ``context``, ``drift_score``, ``timings``); ``EpisodeResult.from_info(info)`` reads it back typed. The
    environment never prints or logs.

    ## Arguments

    ``gym.make("AutoCompress/Compress-v0")`` builds a cheap deterministic environment: the shipped digits CNN on
    scikit-learn's digits under the ``host`` preset and the ``prune-quant`` space. Real jobs pass:

    - ``model``, ``dataset``, ``pretrained``, ``weights``, ``data_dir``: the trained network and its data.
    - ``env_preset``: a deployment preset name (``raspberry-pi-4-wifi``) or YAML path.
    - ``space``: a search-space preset name (``prune``, ``quant``, ``prune-quant``, ``full``) or YAML path.
    - ``budgets``: overrides of the preset's budgets, e.g. ``{"macs_ratio": 0.5}`` (hard) or
      ``{"latency_ms": {"value": 20, "hard": False}}``.
    - ``val_images``: size of the validation slice (default: the whole val split).
    - ``workload``: a prebuilt :class:`~autocompress.env.workload.Workload`, shared between environments.
    - ``deployment``: a prebuilt :class:`~autocompress.env.deployment.Deployment` (e.g. the one a run folder saved);
      it replaces ``env_preset`` and ``budgets``.

    ## Version History

    - v0: initial release.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - Gymnasium's convention

    def __init__(
        self,
        model: str = "digits-cnn",
        dataset: str = "digits",
        pretrained: bool = True,
        weights: str | None = None,
        data_dir: str | None = None,
        env_preset: str | EnvPreset = "host",
        space: str | SpaceSpec = "prune-quant",
        budgets: dict[str, Any] | None = None,
        val_images: int | None = None,
        workload: Workload | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        super().__init__()
        self.deployment = deployment or Deployment.from_preset(env_preset, budgets)
        self.preset = self.deployment.preset
        self.space_spec = space if isinstance(space, SpaceSpec) else load_space_preset(space)
        self.workload = workload or build_workload(
            model,
            dataset,
            pretrained,
            weights,
            data_dir,
            val_images,
            protect_first_last=self.space_spec.protect_first_last,
            reconstruct=self.space_spec.reconstruct,
        )
        for shift in self.preset.context.shifts:
            if shift != "none":
                Shift.parse(shift).check(self.workload.info)
        self.device = self.deployment.device
        if self.space_spec.split and self.deployment.link is None:
            raise ConfigError(
                f"search space '{self.space_spec.name}' splits the model, so env preset '{self.preset.name}' "
                "must name a link."
            )
        self.table = self.workload.table
        self.space = SearchSpace(self.space_spec, self.table, self.device, self.workload.evaluator.cut_points)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.space.action_dim,), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (LAYER_FEATURES + CONTEXT_FEATURES,), np.float32)
        self._static = self._layer_features()
        self._uncompressed = Assignment({g.id: g.channels for g in self.table.groups}, [])
        self._episode_start = 0.0
        worst = worst_context(self.preset.context)
        self._begin(worst)
        self.guard.check_reachable(f"env preset '{self.preset.name}' with space '{self.space_spec.name}'")
        self._begin(worst)

    # --- set-up per episode ---------------------------------------------------------------------------------

    def _begin(self, context: Context) -> None:
        spec = self.preset.context
        self.cost = self.deployment.cost_model(self.table, self.workload.graph, context)
        self.context, self.limits = context, self.deployment.limits(context)
        self.soft_budgets = self.deployment.budgets(context, hard=False)
        self.guard = BudgetGuard(self.space, self.cost, self.limits, self._adapt_cost, spec.adapt_every)
        full = self.guard.initial()
        self._uncompressed = full
        reference = self.cost.predict(full.kept, [dataclasses.replace(b, wbits=32, abits=32) for b in full.bits])
        self.reference = resources(reference, self.table.macs, self.table.macs, spec.adapt_every)
        self.state = full
        self.step_index = 0
        self.previous = (1.0, 1.0, 1.0)

    def _adapt_cost(self, method: str) -> AdaptationCost:
        return adaptation_method(method).estimate(self.workload.evaluator.options.adapt_images)

    # --- observation -----------------------------------------------------------------------------------------

    def _layer_features(self) -> np.ndarray:
        layers = [self.table.by_name[s.layer] for s in self.space.steps]
        raw = np.array(
            [
                [l.in_channels, l.out_channels, max(l.kernel), max(l.stride), l.out_area, l.macs, l.params]
                for l in layers  # noqa: E741
            ],
            dtype=np.float64,
        )
        normalised = raw / np.maximum(raw.max(axis=0), 1e-12)
        kinds = np.array([[float(l.kind == k) for k in KINDS] for l in layers])  # noqa: E741
        return np.concatenate([kinds, normalised], axis=1)

    def _observation(self) -> np.ndarray:
        n = len(self.space.steps)
        i = min(self.step_index, n - 1)
        macs_now = sum(s.macs for s in technique_shapes(self.table, self.state.kept, self.state.techniques))
        position = {name: k for k, name in enumerate(self.table.names)}[self.space.steps[i].layer]
        rest = sum(layer.macs for layer in self.table.layers[position:])
        dynamic = [
            i / max(1, n - 1),
            *self._static[i],
            (self.table.macs - macs_now) / self.table.macs,
            rest / self.table.macs,
            *self.previous,
            float(i == n - 1),
        ]
        return np.clip(np.array(dynamic + self._context_features(), dtype=np.float32), 0.0, 1.0)

    def _context_features(self) -> list[float]:
        c = self.context
        latency = self.limits.hard.get("latency_ms", self.soft_budgets.get("latency_ms"))
        energy = self.limits.hard.get("energy_mj", self.soft_budgets.get("energy_mj"))
        uplink = self.cost.link.uplink_mbps if self.cost.link else 1000.0
        return [
            c.battery,
            c.free_memory,
            min(1.0, latency / self.reference["latency_ms"]) if latency else 1.0,
            min(1.0, energy / self.reference["energy_mj"]) if energy else 1.0,
            min(1.0, max(0.0, math.log10(uplink * 10) / 4)),
            min(1.0, self.workload.evaluator.drift(c.shift) / 2),
        ]

    # --- Gymnasium API ---------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        context = sample_context(self.preset.context, self.np_random)
        if options and "context" in options:
            context = override_context(context, options["context"])
        self._begin(context)
        self._episode_start = time.perf_counter()
        return self._observation(), {"context": self.context.to_dict()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, but got {action.shape}.")
        step = self.space.steps[self.step_index]
        self.state = self._advance(self.state, self.step_index, action)
        bits = self.state.bits[self.table.names.index(step.layer)]
        keep = self._keep_of(step.keep_group)
        self.previous = (keep, bits.wbits / 32, bits.abits / 32)
        self.step_index += 1
        if self.step_index < len(self.space.steps):
            return self._observation(), 0.0, False, False, {}
        self.state = self.guard.finish(self.state, self.state.split, self.space.decode_adapt(action))
        reward, info = self._score()
        return self._observation(), reward, True, False, info

    def _advance(self, state: Assignment, index: int, action: np.ndarray) -> Assignment:
        """``state`` after step ``index`` decided ``action``, clipped by the budget guard."""
        if index == 0 and self.space.split_choices:
            # The split comes first (Neurosurgeon, then AMC): the look-ahead clipping of every later keep ratio then
            # knows which layers run on the edge server and which latency the link adds.
            state = self.guard.choose_split(state, self.space.decode_split(action))
        choice = self.space.decode_step(action, self.space.steps[index])
        return self.guard.apply_step(state, index, choice)

    def plan(self, actions: list[np.ndarray]) -> Assignment:
        """What an episode of ``actions`` (one per step) would play in the current context — every choice as the
        guard clips it, the split and adaptation as the last step keeps them — without playing or scoring it (so a
        baseline can check that what it asks for is what it gets)."""
        state = self.guard.initial()
        for index, action in enumerate(actions):
            state = self._advance(state, index, np.asarray(action, dtype=np.float32).reshape(-1))
        return self.guard.finish(state, state.split, self.space.decode_adapt(actions[-1]))

    def asked(self, actions: list[np.ndarray]) -> Assignment:
        """What ``actions`` (one per step) ask for before the guard clips anything: keep ratios through the space's
        range and the device's channel rounding, bits, the split and the adaptation as decoded."""
        flat = [np.asarray(a, dtype=np.float32).reshape(-1) for a in actions]
        decoded = [self.space.decode_step(a, s) for a, s in zip(flat, self.space.steps, strict=True)]
        state = self.guard.unclipped(decoded)
        state.split, state.adapt = self.space.decode_split(flat[0]), self.space.decode_adapt(flat[-1])
        return state

    def _keep_of(self, group: int | None) -> float:
        if group is None:
            return 1.0
        return self.state.kept[group] / self.table.groups[group].channels

    # --- scoring ---------------------------------------------------------------------------------------------

    def policy(self, state: Assignment | None = None) -> Policy:
        """The policy document of an assignment (default: the current one)."""
        state = state or self.state
        layers = {}
        for layer, bits in zip(self.table.layers, state.bits, strict=True):
            keep = (
                self._keep_of(layer.group)
                if layer.group is not None and not self.table.groups[layer.group].protected
                else 1.0
            )
            techniques = state.techniques.get(layer.name, {})
            setting = LayerSetting(keep=keep, wbits=bits.wbits, abits=bits.abits, techniques=techniques)
            if setting != LayerSetting():
                layers[layer.name] = setting
        return Policy(self.workload.model_name, LayerSetting(), layers, state.split, state.adapt, self.space.round_to)

    def _reward(self, accuracy: float, costs: dict[str, float]) -> float:
        """The reward of an episode of the current context with this accuracy and these costs."""
        energy_scale = self.deployment.energy_weight_scale(self.context)
        return compute_reward(self.preset.reward, accuracy, costs, self.reference, self.soft_budgets, energy_scale)

    def rescore(
        self, policy: dict[str, Any], context: dict[str, Any] | None, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[float, float]:
        """Score a logged episode's policy again on other validation ``images``: its accuracy there and the reward
        that accuracy gives in the episode's ``context`` (its ``info["context"]``; ``None``: the preset's worst
        context). Scored on the search's own slice, it gives the logged accuracy and reward back. The environment
        is left between episodes: call :meth:`reset` before playing again."""
        base = worst_context(self.preset.context)
        self._begin(override_context(base, context) if context else base)
        document = Policy.from_dict(policy, "a logged policy")
        accuracy, adapt_cost = self.workload.evaluator.score_on(document, self.context.shift, images, labels)
        report = self.cost.predict_policy(document, adapt_cost)
        macs = document.macs(self.table)
        costs = resources(report, macs, self.table.macs, self.preset.context.adapt_every)
        return accuracy, self._reward(accuracy, costs)

    def _score(self) -> tuple[float, dict[str, Any]]:
        policy = self.policy()
        result = self.workload.evaluator.evaluate(policy, self.context.shift)
        report = self.cost.predict_policy(policy, result.adapt_cost)  # the document scored gives the costs too
        costs = resources(report, result.macs, self.table.macs, self.preset.context.adapt_every)
        soft = self.soft_budgets
        reward = self._reward(result.accuracy, costs)
        hard_broken = [n for n, v in self.limits.hard.items() if costs[n] > v * (1 + 1e-9)]
        memory_broken = [
            m
            for m, ok in (("ram", report.peak_memory_bytes <= self.limits.ram_bytes), ("flash", report.fits_flash))
            if not ok
        ]
        soft_broken = [n for n, v in soft.items() if costs[n] > v * (1 + 1e-9)]
        violated = hard_broken + memory_broken + soft_broken
        episode = EpisodeResult(
            accuracy=result.accuracy,
            reward=reward,
            latency_ms=costs["latency_ms"],
            energy_mj=costs["energy_mj"],
            macs_ratio=costs["macs_ratio"],
            macs=result.macs,
            storage_bytes=report.storage_bytes,
            peak_memory_bytes=report.peak_memory_bytes,
            fits=not memory_broken,
            split_bytes=result.split_bytes,
            constraint_violations=len(violated),
            hard_violations=len(hard_broken) + len(memory_broken),
            violated=violated,
            drift_score=result.drift_score,
            policy=policy.to_dict(),
            context=self.context.to_dict(),
            timings={**result.timings, "episode": time.perf_counter() - self._episode_start},
        )
        info = episode.to_info()
        return reward, info
