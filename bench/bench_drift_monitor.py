"""What the adaptive runtime's drift monitor sees: fire rates on clean and shifted test streams of a package.

For one adaptive package (its manifest's monitor: per-class clean statistics and threshold), the test images are
cut into windows of the monitor's size, in a shuffled order and sorted by class (a clean stream whose classes
arrive in order must not fire), clean and under each shift; a window fires when its score
(:func:`autocompress.deploy.runtime.window_drift_score`, against the classes the package's most accurate
configuration predicts) is above the threshold. Also the accuracy each shift costs that configuration.

    python bench/bench_drift_monitor.py                               # digits, a package made in a temp folder
    python bench/bench_drift_monitor.py --quick                       # the same on fewer images, nothing written
    python bench/bench_drift_monitor.py --package bench/results/adaptive/resnet20-raspberry-pi-4-wifi-full/package \
        --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.data import load_dataset
from autocompress.data.shifts import Shift
from autocompress.deploy.runtime import AdaptiveModel, input_features, window_drift_score
from bench.common import publish, rows_table

SHIFTS = (
    "gaussian_noise:1",
    "gaussian_noise:3",
    "shot_noise:3",
    "gaussian_blur:1",
    "gaussian_blur:3",
    "contrast:1",
    "contrast:3",
    "brightness:3",
    "pixelate:3",
    "jpeg:1",
    "jpeg:3",
    "jpeg:5",
)


def quick_package() -> Path:
    from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive
    from autocompress.search import SearchConfig, SearchJob

    root = Path(tempfile.mkdtemp())
    config = SearchConfig(
        model="digits-cnn",
        dataset="digits",
        env="raspberry-pi-4-wifi",
        space="prune",
        agent="random",
        episodes=6,
        seed=0,
    )
    SearchJob.create(config, root / "run").run()
    export_adaptive(root / "run", root / "pkg", AdaptiveOptions(configs=2, test_images=200, ladder=()))
    return root / "pkg"


def fire_rate(model: AdaptiveModel, raw: np.ndarray, order: np.ndarray) -> tuple[float, float]:
    """The fraction of windows above the threshold, and the median window score, for ``raw`` fed in ``order``."""
    monitor = model.manifest.monitor
    config = model.current
    predicted = np.concatenate([model.run(config, raw[i : i + 256]).argmax(1) for i in range(0, len(raw), 256)])
    features = input_features(model.manifest.input.normalise(raw))
    class_mean, class_std = np.asarray(monitor.class_mean), np.asarray(monitor.class_std)
    scores = [
        window_drift_score(features[idx], predicted[idx], class_mean, class_std)
        for idx in (order[i : i + monitor.window] for i in range(0, len(order) - monitor.window + 1, monitor.window))
    ]
    return float(np.mean(np.asarray(scores) > monitor.threshold)), float(np.median(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--package", default=None, help="an adaptive package folder (export --adaptive)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS))
    args = parser.parse_args()
    if args.quick:
        args.test_images = 320
    if not args.package:
        args.package = str(quick_package())
    model = AdaptiveModel.load(args.package, adapt=False)
    model.current = max(model.configs, key=lambda c: model.configs[c].val_accuracy)
    splits = load_dataset(model.manifest.dataset, args.data_dir)
    raw_t, labels = splits.test_x[: args.test_images], splits.test_y[: args.test_images].numpy()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    clean_accuracy = 0.0
    for shift in ["none", *args.shifts]:
        try:
            shifted = raw_t if shift == "none" else Shift.parse(shift).apply(raw_t, 0, splits.info)
        except Exception as exc:  # a shift this dataset's inputs do not take (e.g. JPEG of a 1-D series)
            rows.append(
                {
                    "stream": shift,
                    "accuracy": f"n/a: {str(exc).splitlines()[0][:80]}",
                    "accuracy cost (pt)": "",
                    "windows fired": "",
                    "median score": "",
                }
            )
            continue
        raw = shifted.numpy() if isinstance(shifted, torch.Tensor) else np.asarray(shifted)
        accuracy = float((model.run(model.current, raw).argmax(1) == labels).mean())
        clean_accuracy = accuracy if shift == "none" else clean_accuracy
        orders = {"shuffled": rng.permutation(len(raw))}
        if shift == "none":
            orders["sorted by class"] = np.argsort(labels, kind="stable")
        for name, order in orders.items():
            fired, median = fire_rate(model, raw, order)
            rows.append(
                {
                    "stream": f"{shift}, {name}",
                    "accuracy": round(accuracy, 4),
                    "accuracy cost (pt)": round(100 * (clean_accuracy - accuracy), 2),
                    "windows fired": round(fired, 3),
                    "median score": round(median, 3),
                }
            )
    monitor = model.manifest.monitor
    body = (
        f"Package `{Path(args.package).name}` ({model.manifest.model} on {model.manifest.dataset}), its most accurate "
        f"configuration `{model.current}`, {len(raw_t)} test images in windows of {monitor.window}; threshold "
        f"{monitor.threshold:.3f} (1.25× the worst clean calibration window, {monitor.calibration}).\n\n"
        + rows_table(rows)
    )
    title = f"Drift monitor: what it sees and what it does not ({model.manifest.model}, {model.manifest.dataset})"
    publish(f"drift-monitor-{model.manifest.dataset}", title, body, rows, args.quick)


if __name__ == "__main__":
    main()
