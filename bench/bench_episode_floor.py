"""How far an episode is from its floor, per zoo model. An episode must at least run the compressed model once
over the validation slice (the score) and, with the sequential least-squares refit, once more over the refit
images (the refit's inputs come from the pruned network); everything else — pruning the copy, the refit's
products and solves, the budget guard, the cost model — is overhead above that floor.

Each model plays the same random episodes (prune space with sequential reconstruction, 50 % of the MACs); after
each, the two floor passes are timed on the very policy the episode played, in the same process, so machine noise
hits episode and floor alike.

    python bench/bench_episode_floor.py --quick                    # digits-cnn, seconds (CI smoke test)
    python bench/bench_episode_floor.py --data-dir ../shared/data  # every zoo model, ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from autocompress.compress import reconstruction
from autocompress.compress.policy import Policy
from autocompress.env import AutoCompressEnv, build_workload
from autocompress.models.zoo import has_pretrained
from bench.common import markdown_table, publish

MODELS = {
    "digits-cnn": "digits",
    "sensor-cnn": "basic-motions",
    "resnet20": "cifar10",
    "resnet32": "cifar10",
    "resnet56": "cifar10",
    "vgg11": "cifar10",
    "vgg16": "cifar10",
    "mobilenetv2": "cifar10",
}
SPACE = "bench/presets/prune-sequential.yaml"


ALGEBRA = {"gram": 0.0, "solve": 0.0}  # seconds in the refit's Gram products and solves, summed


def _timed(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            ALGEBRA[name] += time.perf_counter() - start

    return wrapper


def episode(env: AutoCompressEnv, seed: int) -> dict[str, Any]:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = {}
    for _ in env.space.steps:
        *_, info = env.step(rng.uniform(-1, 1, env.space.action_dim).astype(np.float32))
    return info


def floor_s(env: AutoCompressEnv, policy: dict[str, Any]) -> tuple[float, float]:
    """Seconds of the score's pass over the validation slice and of the refit's pass over its images, for the
    pruned model of ``policy`` in the evaluator's memory layout (the pruned copy is made outside the timing)."""
    evaluator = env.workload.evaluator
    model = evaluator.pruner.prune(Policy.from_dict(policy).kept_channels(evaluator.table)).eval()
    inputs = evaluator.val_inputs(None)
    start = time.perf_counter()
    evaluator.accuracy(model, inputs)
    score = time.perf_counter() - start
    refit_images = evaluator.sequential_targets().images
    fmt = evaluator.memory_format if refit_images.dim() == 4 else torch.contiguous_format
    model.to(memory_format=fmt)
    start = time.perf_counter()
    with torch.no_grad():
        model(refit_images)
    return score, time.perf_counter() - start


def timed(env: AutoCompressEnv, episodes: int, layout: str) -> dict[str, float]:
    """Median episode, floor and phases over ``episodes`` random episodes with the scoring passes in ``layout``
    (``default``: PyTorch's contiguous layout, as before the evaluator chose; ``auto``: the evaluator's choice)."""
    evaluator = env.workload.evaluator
    evaluator._format = torch.contiguous_format if layout == "default" else None  # the A/B switch
    evaluator._targets, evaluator._results = None, {}  # refit images in that layout, no cache
    episode(env, 10_000)  # warm-up: the refit's targets and the cached validation tensors
    rows = []
    for seed in range(episodes):
        ALGEBRA.update(gram=0.0, solve=0.0)
        info = episode(env, seed)
        algebra = dict(ALGEBRA)
        score, refit = floor_s(env, info["policy"])
        row = {"episode": info["timings"]["episode"], "score": score, "refit": refit, **algebra, **info["timings"]}
        row["beyond"] = (row["episode"] - algebra["gram"] - algebra["solve"]) / (score + refit)
        rows.append(row)
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}


def measure(model: str, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    workload = build_workload(
        model, dataset, has_pretrained(model, dataset), None, args.data_dir, args.val_images, reconstruct="sequential"
    )
    env = AutoCompressEnv(workload=workload, env_preset="raspberry-pi-4", space=SPACE, budgets={"macs_ratio": 0.5})
    before, after = timed(env, args.episodes, "default"), timed(env, args.episodes, "auto")
    floor = after["score"] + after["refit"]
    evaluator = workload.evaluator
    return {
        "model": model,
        "val / refit images": f"{len(evaluator.val_labels)} / {len(evaluator.sequential_targets().images)}",
        "layout": "channels-last" if evaluator.memory_format == torch.channels_last else "default",
        "floor s": floor,
        "episode s": after["episode"],
        "episode / floor": after["episode"] / floor,
        "prune s": after["prune"],
        "reconstruct s": after["reconstruct"],
        "of which Gram s": after["gram"],
        "of which solve s": after["solve"],
        "episode − Gram − solve, / floor": after["beyond"],
        "evaluate s": after["evaluate"],
        "episode s, default layout": before["episode"],
        "speed-up": before["episode"] / after["episode"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--val-images", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        args.models, args.episodes = ["digits-cnn"], 2
    # the refit's products and solves, timed where the refit looks them up (this process only)
    reconstruction.gram_of = _timed("gram", reconstruction.gram_of)
    reconstruction._solve = _timed("solve", reconstruction._solve)
    rows = [measure(m, MODELS[m], args) for m in args.models]
    body = (
        f"{args.episodes} random episodes per model (median), prune space with sequential reconstruction "
        f"(`{SPACE}`), `raspberry-pi-4` at 50 % of the MACs; models without shipped weights run with their "
        "initial weights (the time does not depend on them). Floor = one pass of the episode's pruned model over "
        "the validation slice + one over the refit images, in the layout the evaluator chose (`layout`); `prune`, "
        "`reconstruct`, `evaluate` are the episode's own phases (`reconstruct` holds the refit's pass; "
        "`of which Gram` are its xᵀx products, `of which solve` its Cholesky solves: arithmetic above the floor that "
        "no ordering of passes removes — xᵀx costs rows × columns² multiply-adds per layer, more than the layer's "
        "whole forward pass where it has many input columns and few output channels). The same "
        "episodes were played first with the scoring passes in PyTorch's default layout (`episode s, default "
        "layout`, what every episode ran in before the evaluator chose), in the same process.\n\n"
        + markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    )
    publish("episode-floor", "Episodes against their floor, per zoo model", body, rows, args.quick)


if __name__ == "__main__":
    main()
