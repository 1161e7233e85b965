"""Replay a context trace over an adaptive package and compare it with the uncompressed model, the best static
configuration and an oracle.

A trace is a YAML file (``steps:`` a list of rows) or a CSV with the columns ``t, battery, free_memory,
bandwidth_scale, latency_budget_ms, hours_to_charge, shift, model_share`` (missing columns keep their previous value;
``t`` in seconds; ``hours_to_charge`` empty or absent when the device does not know it; ``shift`` is ``none`` or any
shift spec; ``model_share`` the part of the battery's drain the model causes, default 1; ``note`` is free text; any
other key is refused in one line).

The battery drains with what runs: the trace's ``battery`` is the charge of a device running the package's most
accurate configuration, and every strategy has its own charge, drained by what it spends (:func:`_drain`) — a
strategy that saves energy has more charge left, and the adaptive runtime reads its own. Shipped traces
(``autocompress/deploy/traces/``): ``phone-day``, ``commute``, ``camera-drift``, ``battery-day`` (a drain to 8 % and
a charge), ``battery-day-known-charge`` (the same, with the hours to the next charge), ``link-drop`` (a link that
fades and drops) and ``latency-tighten`` (a latency budget that tightens under load).

At each step every strategy classifies the next test images (with the step's shift applied) and is charged the
predicted latency and energy of what it ran at the step's bandwidth:

- ``adaptive``: the package's runtime (:class:`~autocompress.deploy.runtime.AdaptiveModel`): controller, drift monitor,
  AdaBN when the input drifts (its forward passes charged);
- ``static_accurate``: the package's most accurate configuration, whatever the context — what one ships without
  adaptation (its budget violations counted);
- ``static_feasible``: the most accurate configuration that meets every hard limit at every step of the trace (if
  none does, the one that breaks the fewest steps);
- ``uncompressed``: the trained model as it is;
- ``oracle``: at each step the feasible configuration that measures most accurate on that step's images.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.config import read_yaml
from autocompress.context_rules import field_problem
from autocompress.data import load_dataset
from autocompress.data.shifts import Shift
from autocompress.deploy.manifest import inside
from autocompress.deploy.runtime import RUNTIME_FIELDS, AdaptiveModel
from autocompress.errors import AutoCompressError, did_you_mean
from autocompress.files import read_text, short
from autocompress.plugins import require_trust
from autocompress.runs import atomic_write_json

log = logging.getLogger(__name__)
TRACES_DIR = Path(__file__).parent / "traces"
STRATEGIES = ("adaptive", "static_accurate", "static_feasible", "uncompressed", "oracle")
TRACE_KEYS = (
    "t",
    "battery",
    "free_memory",
    "bandwidth_scale",
    "latency_budget_ms",
    "hours_to_charge",
    "shift",
    "model_share",
    "note",  # free text
)
OPTIONAL = ("latency_budget_ms", "hours_to_charge")  # empty: none, unknown
ORDERS = ("stored", "by-class")
MAX_TRACE_STEPS = 10_000  # a day at one step per 10 s; every step runs every strategy on its images
MAX_IMAGES_PER_STEP = 10_000
EMPTY = 1e-3  # a strategy's charge is read as at least this (a context's battery is > 0); below it, steps are empty


@dataclass(frozen=True)
class TraceStep:
    t: float
    battery: float
    free_memory: float
    bandwidth_scale: float
    latency_budget_ms: float | None
    shift: str
    hours_to_charge: float | None = None
    model_share: float = 1.0

    def context(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUNTIME_FIELDS}


def shipped_traces() -> list[str]:
    return sorted(p.stem for p in TRACES_DIR.glob("*.yaml"))


def load_trace(name_or_path: str) -> tuple[str, list[TraceStep]]:
    """A trace by shipped name or path (YAML with ``steps:`` or CSV); returns its name and steps."""
    path = Path(name_or_path)
    if not path.is_file():
        if name_or_path not in shipped_traces():
            raise AutoCompressError(
                f"a trace must be one of {', '.join(shipped_traces())} or a YAML/CSV file, but '{name_or_path}' is "
                "neither.",
                params=("trace",),
            )
        path = TRACES_DIR / f"{name_or_path}.yaml"
    try:
        if path.suffix == ".csv":
            text = read_text(path, "trace", AutoCompressError)
            rows: Any = list(csv.DictReader(io.StringIO(text, newline="")))
        else:
            data = read_yaml(path)
            if data is not None and not isinstance(data, dict):
                raise AutoCompressError(
                    f"the trace '{path}' must be a YAML mapping with steps: (a list of rows), but is "
                    f"{type(data).__name__}.",
                    params=("trace",),
                )
            rows = (data or {}).get("steps", [])
    except csv.Error as exc:
        raise AutoCompressError(
            f"the trace '{path}' must be YAML with steps: or CSV, but cannot be read ({exc})."
        ) from None
    if not rows:
        raise AutoCompressError(f"the trace '{path}' must hold at least one step, but holds none.", params=("trace",))
    if isinstance(rows, list) and len(rows) > MAX_TRACE_STEPS:
        raise AutoCompressError(
            f"a trace may hold at most {MAX_TRACE_STEPS} steps, but '{path}' holds {len(rows)}; sample it coarser "
            "(one step per minute of context is plenty).",
            params=("trace",),
        )
    steps, state = (
        [],
        {
            "t": 0.0,
            "battery": 1.0,
            "free_memory": 1.0,
            "bandwidth_scale": 1.0,
            "latency_budget_ms": None,
            "hours_to_charge": None,
            "shift": "none",
            "model_share": 1.0,
        },
    )
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise AutoCompressError(f"the trace '{path}' must list its steps as mappings, but does not.", params=("trace",))
    for i, row in enumerate(rows):
        if None in row or any(not isinstance(key, str) for key in row):
            raise AutoCompressError(
                f"every step of the trace '{path}' must have text keys (a CSV row no more fields than its header), "
                f"but step {i} has not.",
                params=("trace",),
            )
        unknown = sorted(set(row) - set(TRACE_KEYS))
        if unknown:
            raise AutoCompressError(
                f"a trace step has the keys {', '.join(TRACE_KEYS)}, but step {i} of '{path}' has {short(unknown[0])}"
                f"{did_you_mean(str(unknown[0]), TRACE_KEYS)}",
                params=("trace",),
            )
        for key, value in row.items():
            if key == "note":
                continue
            if key in state and value not in (None, ""):
                state[key] = value if key == "shift" else _number(value, key, i, path)
            elif key in OPTIONAL:
                state[key] = None
        step = TraceStep(**state)  # type: ignore[arg-type]
        problems = [p for name, value in step.context().items() if (p := field_problem(name, value))]
        if not 0 <= step.model_share <= 1:
            problems.append(f"a step must have 0 <= model_share <= 1, but model_share is {step.model_share!r}")
        if problems:
            raise AutoCompressError(f"step {i} of '{path}': {problems[0]}.", params=("trace",))
        steps.append(step)
    return path.stem, steps


def _number(value: Any, key: str, row: int, path: Path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AutoCompressError(f"{key} of step {row} in '{path}' must be a number, but is {short(value)}.") from None
    if not np.isfinite(number):
        raise AutoCompressError(f"{key} of step {row} in '{path}' must be finite, but is {value}.")
    return number


def simulate(
    package: str | Path,
    trace: str,
    images_per_step: int = 200,
    data_dir: str | None = None,
    out_dir: str | Path | None = None,
    dataset: str | None = None,
    trust_code: bool = False,
    order: str = "stored",
) -> dict[str, Any]:
    """Replay ``trace`` over the package; returns per-step rows and totals (written to ``out_dir`` with a plot).

    The package is all it needs (no run folder): the test split of its manifest's dataset (or ``dataset``, e.g.
    where the file moved; ``data_dir`` for CIFAR-10) feeds every strategy, the uncompressed one through the
    package's ``reference/model.onnx``. ``trust_code`` allows a ``file.py:…``/``pkg.mod:…`` dataset in the
    manifest or shift in the trace (a reference given as ``dataset`` is the caller's own choice). ``order``:
    the test split as stored, or ``by-class`` (every image of class 0 first, then class 1, …: a clean stream whose
    classes arrive in order, as sorted UCR/UEA test splits do — the drift monitor must not fire on it).
    """
    if not 1 <= images_per_step <= MAX_IMAGES_PER_STEP:
        raise AutoCompressError(
            f"1 <= images_per_step <= {MAX_IMAGES_PER_STEP} must hold (each strategy classifies them at every step), "
            f"but got images_per_step={images_per_step}.",
            params=("images_per_step",),
        )
    if order not in ORDERS:
        raise AutoCompressError(f"order must be one of {', '.join(ORDERS)}, but got '{order}'.", params=("order",))
    name, steps = load_trace(trace)
    now = [steps[0].t]
    model = AdaptiveModel.load(package, clock=lambda: now[0])  # the governor's clock is the trace's
    manifest = model.manifest
    require_trust(manifest.dataset, f"the package '{package}'", trust_code)
    require_trust([str(step.shift) for step in steps], f"the trace '{trace}'", trust_code)
    splits = load_dataset(dataset or manifest.dataset, data_dir)
    info = splits.info
    if tuple(info.input_shape) != manifest.input.shape or info.dtype != manifest.input.dtype:
        raise AutoCompressError(
            f"the dataset must give the package's inputs ({manifest.input.dtype} {list(manifest.input.shape)}), but "
            f"'{dataset or manifest.dataset}' gives {info.dtype} {list(info.input_shape)}; pass the dataset the "
            "package was made for.",
            params=("dataset",),
        )
    if manifest.uncompressed.path is None:
        raise AutoCompressError(f"the package '{package}' must ship reference/model.onnx; export it again.")
    full_model = model._session(inside(model.folder, manifest.uncompressed.path, "uncompressed.path").read_bytes())
    static = _static_choice(model, steps)
    accurate = max(model.configs, key=lambda c: model.configs[c].val_accuracy)
    stream = np.arange(len(splits.test_y))
    if order == "by-class":
        stream = np.argsort(splits.test_y.numpy(), kind="stable")
    reference = manifest.uncompressed.costs
    rows: list[dict[str, Any]] = []
    cursor = 0
    battery = dict.fromkeys(STRATEGIES, steps[0].battery)  # each strategy's own charge (see _drain)
    for index, step in enumerate(steps):
        now[0] = step.t
        contexts = {s: dict(step.context(), battery=max(battery[s], EMPTY)) for s in STRATEGIES}
        picks = stream[np.arange(cursor, cursor + images_per_step) % len(stream)]
        cursor += images_per_step
        x, y = splits.test_x[picks], splits.test_y[picks].numpy()
        shift = None if step.shift in ("none", None) else Shift.parse(str(step.shift))
        if shift is not None:
            x = shift.apply(x, index, info) if isinstance(shift, Shift) else shift.images[picks % len(shift.images)]
        raw = x.numpy()
        bandwidth = step.bandwidth_scale
        # adaptive
        before = len(model.events)
        model.update_context(**contexts["adaptive"])
        logits = np.concatenate([model.predict(raw[i : i + 32]) for i in range(0, len(raw), 32)])
        for event in model.events[before:]:
            event["step"] = index
        adapted = [e for e in model.events[before:] if e["event"] == "adapt"]
        latency, energy = model.costs(model.current, bandwidth)
        extra = sum(e["inputs"] for e in adapted) * (energy or 0.0)  # AdaBN: one forward pass per buffered input
        rows.append(
            _row(
                index,
                step,
                "adaptive",
                model.current,
                logits,
                y,
                latency,
                energy,
                extra,
                model.check(model.current, contexts["adaptive"]),
                contexts["adaptive"]["battery"],
            )
        )
        for strategy, config in (("static_accurate", accurate), ("static_feasible", static)):
            latency, energy = model.costs(config, bandwidth)
            rows.append(
                _row(
                    index,
                    step,
                    strategy,
                    config,
                    _run(model, config, raw),
                    y,
                    latency,
                    energy,
                    0.0,
                    model.check(config, contexts[strategy]),
                    contexts[strategy]["battery"],
                )
            )
        # uncompressed
        full = full_model.run(None, {full_model.get_inputs()[0].name: model.manifest.input.check(raw)})[0]
        latency, energy = model.entry_costs(reference, bandwidth)
        rows.append(
            _row(
                index,
                step,
                "uncompressed",
                "full",
                full,
                y,
                latency,
                energy,
                0.0,
                model.check_entry(reference, contexts["uncompressed"]),
                contexts["uncompressed"]["battery"],
            )
        )
        # oracle
        feasible = [c for c in model.configs if not model.check(c, contexts["oracle"])] or [model.current]
        scored = {c: float((_run(model, c, raw).argmax(1) == y).mean()) for c in feasible}
        best = max(feasible, key=lambda c: (scored[c], -(model.costs(c, bandwidth)[1] or 0.0)))
        latency, energy = model.costs(best, bandwidth)
        rows.append(
            _row(
                index,
                step,
                "oracle",
                best,
                _run(model, best, raw),
                y,
                latency,
                energy,
                0.0,
                model.check(best, contexts["oracle"]),
                contexts["oracle"]["battery"],
            )
        )
        if index + 1 < len(steps):
            _drain(battery, rows[-len(STRATEGIES) :], step, steps[index + 1], images_per_step)
    result = {
        "trace": name,
        "package": str(package),
        "images_per_step": images_per_step,
        "static_config": static,
        "static_accurate_config": accurate,
        "order": order,
        "shift_onsets": _onsets(steps, images_per_step),
        "totals": _totals(rows, model, images_per_step),
        "events": model.events,
        "rows": rows,
    }
    if out_dir is not None:
        _write(Path(out_dir), result)
    return result


def _onsets(steps: list[TraceStep], images: int) -> list[dict[str, Any]]:
    """Where each drift of the trace begins, in inputs seen by the runtime (to measure how fast it reacts)."""
    return [
        {"step": i, "shift": s.shift, "input": i * images}
        for i, s in enumerate(steps)
        if s.shift not in ("none", None) and (i == 0 or steps[i - 1].shift != s.shift)
    ]


def _drain(
    battery: dict[str, float], step_rows: list[dict[str, Any]], step: TraceStep, after: TraceStep, images: int
) -> None:
    """Each strategy's charge at the next step. The trace's battery column is the device's charge while it runs the
    package's most accurate configuration (``static_accurate``); of the charge it loses between two steps, the
    share ``model_share`` (default 1: a device that mostly infers — a camera trap, a sensor node) is the model's and
    scales with what each strategy spent per inference (AdaBN's passes included) against ``static_accurate``; the
    rest (screen, radio, …) is the same for all. A charge the trace gains (on the charger) every strategy gains, up to
    full. ``model_share: 0`` gives every strategy the trace's battery as it is."""
    spent = {r["strategy"]: (r["energy_mj"] or 0.0) + r["adapt_energy_mj"] / images for r in step_rows}
    reference = spent["static_accurate"]
    lost = step.battery - after.battery
    for strategy in battery:
        if lost <= 0:
            battery[strategy] = min(1.0, battery[strategy] - lost)
            continue
        ratio = spent[strategy] / reference if reference > 0 else 1.0
        battery[strategy] -= lost * (step.model_share * ratio + 1.0 - step.model_share)


def _run(model: AdaptiveModel, config: str, raw: np.ndarray) -> np.ndarray:
    return model.run(config, raw)


def _static_choice(model: AdaptiveModel, steps: list[TraceStep]) -> str:
    """The most accurate configuration that meets every hard limit at every step (else the fewest broken steps)."""

    def broken(config: str) -> int:
        return sum(bool(model.check(config, s.context())) for s in steps)

    return min(model.configs, key=lambda c: (broken(c), -model.configs[c].val_accuracy))


def _row(
    index: int,
    step: TraceStep,
    strategy: str,
    config: str,
    logits: np.ndarray,
    labels: np.ndarray,
    latency: float | None,
    energy: float | None,
    extra_mj: float,
    broken: list[str],
    battery: float,
) -> dict[str, Any]:
    return {
        "step": index,
        "t": step.t,
        "strategy": strategy,
        "config": config,
        "battery": battery,
        "bandwidth_scale": step.bandwidth_scale,
        "free_memory": step.free_memory,
        "latency_budget_ms": step.latency_budget_ms,
        "hours_to_charge": step.hours_to_charge,
        "shift": step.shift,
        "accuracy": float((logits.argmax(1) == labels).mean()),
        "latency_ms": latency,
        "energy_mj": energy,
        "adapt_energy_mj": extra_mj,
        "violation": ",".join(broken),
    }


def _totals(rows: list[dict[str, Any]], model: AdaptiveModel, images: int) -> dict[str, dict[str, Any]]:
    totals = {}
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        energy = sum((r["energy_mj"] or 0.0) * images + r["adapt_energy_mj"] for r in mine)
        configs = [r["config"] for r in mine]
        totals[strategy] = {
            "mean_accuracy": float(np.mean([r["accuracy"] for r in mine])),
            "energy_mj": energy,
            "mean_latency_ms": float(np.mean([r["latency_ms"] or 0.0 for r in mine])),
            "violation_steps": sum(bool(r["violation"]) for r in mine),
            "final_battery": mine[-1]["battery"],
            "min_battery": min(r["battery"] for r in mine),
            "empty_steps": sum(r["battery"] <= EMPTY for r in mine),
            "switches": sum(a != b for a, b in itertools.pairwise(configs)),
        }
    ms = model.switch_ms
    totals["adaptive"]["switch_ms_median"] = float(np.median(ms)) if ms else 0.0
    totals["adaptive"]["adaptations"] = sum(e["event"] == "adapt" for e in model.events)
    return totals


def _write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "simulation.json", {k: v for k, v in result.items() if k != "rows"})
    with (out / "simulation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result["rows"][0]))
        writer.writeheader()
        writer.writerows(result["rows"])
    _plot(out / "simulation.png", result)
    _tensorboard(out / "tb", result)


def _plot(path: Path, result: dict[str, Any]) -> None:
    """Context, configuration, accuracy and energy over the trace's time (seconds, minutes or hours as it spans);
    drift periods shaded; the adaptive energy includes AdaBN's passes (dotted: without them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    first = [r for r in rows if r["strategy"] == "adaptive"]
    span = max(r["t"] for r in first) if first else 0.0
    unit, scale = ("h", 3600.0) if span >= 4 * 3600 else ("min", 60.0) if span >= 600 else ("s", 1.0)
    times = [r["t"] / scale for r in first]
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    axes[0].step(times, [r["battery"] for r in first], where="post", label="battery (adaptive)")
    accurate = [r for r in rows if r["strategy"] == "static_accurate"]
    axes[0].step(times, [r["battery"] for r in accurate], where="post", ls=":", label="battery (static_accurate)")
    axes[0].step(times, [r["bandwidth_scale"] for r in first], where="post", label="bandwidth (× nominal)")
    axes[0].step(times, [r["free_memory"] for r in first], where="post", label="free memory")
    budgets = [r["latency_budget_ms"] for r in first]
    if any(b is not None for b in budgets):
        twin = axes[0].twinx()
        twin.step(
            times,
            [np.nan if b is None else b for b in budgets],
            where="post",
            color="black",
            ls="--",
            label="latency budget (ms)",
        )
        twin.set_ylabel("latency budget (ms)")
        twin.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("context (fraction)")
    configs = sorted({r["config"] for r in rows})
    for strategy in STRATEGIES:
        mine = [r for r in rows if r["strategy"] == strategy]
        axes[1].step(times, [configs.index(r["config"]) for r in mine], where="post", label=strategy)
        axes[2].step(times, [r["accuracy"] for r in mine], where="post", label=strategy)
        energy = [(r["energy_mj"] or 0.0) + r["adapt_energy_mj"] / result["images_per_step"] for r in mine]
        axes[3].step(times, energy, where="post", label=strategy)
    axes[3].step(
        times,
        [r["energy_mj"] or 0.0 for r in first],
        where="post",
        color="C0",
        ls=":",
        label="adaptive without AdaBN's passes",
    )
    axes[1].set_yticks(range(len(configs)), configs)
    axes[1].set_ylabel("configuration")
    axes[2].set_ylabel("accuracy")
    axes[3].set_ylabel("energy / inference (mJ)")
    axes[3].set_xlabel(f"time ({unit}) — trace '{result['trace']}'")
    for i, r in enumerate(first):
        if r["shift"] not in ("none", None):
            end = times[i + 1] if i + 1 < len(times) else times[i] + (times[i] - times[i - 1] if i else 1.0)
            for axis in axes:
                axis.axvspan(times[i], end, color="orange", alpha=0.15, lw=0)
    for axis in axes:
        handles, labels = axis.get_legend_handles_labels()
        if any(r["shift"] not in ("none", None) for r in first):
            handles.append(matplotlib.patches.Patch(color="orange", alpha=0.3))
            labels.append("input drifts")
        axis.legend(handles, labels, loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _tensorboard(folder: Path, result: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for r in result["rows"]:
            writer.add_scalar(f"{r['strategy']}/accuracy", r["accuracy"], r["step"])
            writer.add_scalar(f"{r['strategy']}/energy_mj", r["energy_mj"] or 0.0, r["step"])
            if r["strategy"] == "adaptive":
                writer.add_scalar("context/battery", r["battery"], r["step"])
                writer.add_scalar("context/bandwidth_scale", r["bandwidth_scale"], r["step"])


def render(result: dict[str, Any]) -> str:
    """A markdown table of the totals."""
    lines = [
        f"Trace '{result['trace']}', {result['images_per_step']} test images per step; "
        f"static_accurate = {result['static_accurate_config']}, static_feasible = {result['static_config']}, "
        f"test images {result.get('order', 'stored')}",
        "",
        "| strategy | mean accuracy | energy (mJ) | mean latency (ms) | steps with a violation | switches | "
        "battery at the end (least) |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy, t in result["totals"].items():
        lines.append(
            f"| {strategy} | {t['mean_accuracy']:.4f} | {t['energy_mj']:.4g} | {t['mean_latency_ms']:.4g} | "
            f"{t['violation_steps']} | {t['switches']} | {t['final_battery']:.2f} ({t['min_battery']:.2f}) |"
        )
    adaptive = result["totals"]["adaptive"]
    lines.append("")
    lines.append(
        f"adaptive: median decision+switch {adaptive['switch_ms_median']:.3f} ms, {adaptive['adaptations']} adaptations"
    )
    return "\n".join(lines)


def dumps(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2)
