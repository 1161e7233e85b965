"""The wide fault battery: the inputs of ``test_fault_battery.py`` and as many again of every kind a careless user or
an attacker brings — policies, presets, flags, data, damaged run folders and packages, traces, device profiles —
across every verb and the Python API (``load_exported``, ``AdaptiveModel.load``, ``SearchJob``, ``Policy.load``).

Each input is tried once (in-process, capped at 120 s of CPU time per torch thread or 600 s of wall-clock time) and
tallied as a one-line error (stderr holds one ``error: …`` line of at most 300 characters and the exit code is 1; an
API call raises AutoCompressError with a one-line message), a traceback, a silent accept (exit 0 where an error was
due), a hang, or another outcome. A documented acceptance (``ACCEPTED``) must exit 0 *and* deliver what it promises
(checked). The tally prints with ``pytest -n 0 -s``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autocompress.errors import AutoCompressError
from tests.cli.test_fault_battery import CASES as FIRST_CASES
from tests.cli.test_fault_battery import EVALUATE, SEARCH, _npz, write

FIX: dict[str, Path] = {}  # the module fixture's run folder, export and package (copied before a case damages one)
CAP_S = 120  # CPU seconds of this process a case may take before it counts as a hang
WALL_CAP_S = 600  # wall-clock seconds, for a case that waits forever
MAX_LINE = 300
Made = list[str] | Callable[[], Any]


def copy(kind: str, t: Path) -> Path:
    """A private copy of the fixture's ``run``, ``ddpg`` run, ``export`` or ``pkg`` in the case folder."""
    target = t / kind
    shutil.copytree(FIX[kind], target, symlinks=True)
    return target


def edit_json(path: Path, change: Callable[[Any], Any]) -> Path:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return path


def pkg_with(t: Path, change: Callable[[dict[str, Any]], Any]) -> str:
    folder = copy("pkg", t)
    edit_json(folder / "manifest.json", change)
    return str(folder)


def manifest_set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(data: dict[str, Any]) -> Any:
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return data

    return change


def run_with(t: Path, name: str, text: str | bytes, kind: str = "run") -> str:
    folder = copy(kind, t)
    write(folder / name, text)
    return str(folder)


def trace(t: Path, text: str, suffix: str = ".yaml") -> str:
    return write(t / f"trace{suffix}", text)


def simulate(t: Path, trace_path: str, *extra: str) -> list[str]:
    return ["simulate", str(copy("pkg", t)), "--trace", trace_path, "--images-per-step", "8", *extra]


def space(t: Path, body: str) -> list[str]:
    return [*SEARCH, "--space", write(t / "s.yaml", "name: s\ndescription: s\n" + body)]


def agent(t: Path, body: str) -> list[str]:
    return [*SEARCH, "--agent", write(t / "a.yaml", "name: a\n" + body)]


def env(t: Path, body: str) -> list[str]:
    return [*SEARCH, "--env", write(t / "e.yaml", "name: e\ndescription: e\n" + body)]


def npz_train(t: Path, **arrays: np.ndarray) -> list[str]:
    return ["train", "--model", "digits-cnn", "--dataset", _npz(t / "d.npz", **arrays), "--epochs", "1"]


def digits_arrays(n: int = 60, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 1, 8, 8)).astype(np.uint8)
    y = np.arange(n) % classes
    return {"x_train": x, "y_train": y, "x_test": x[:20], "y_test": y[:20]}


def pyfile(t: Path, body: str, name: str = "user_code.py") -> str:
    return write(t / name, "import torch\nfrom torch import nn\n" + body)


def policy_file(t: Path, data: Any) -> list[str]:
    return [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", json.dumps(data))]


def layers(**settings: Any) -> dict[str, Any]:
    return {"model": "digits-cnn", "layers": {"conv2": settings}}


def export(t: Path, *extra: str, kind: str = "run") -> list[str]:
    return ["export", str(copy(kind, t)), "--out", str(t / "out"), *extra]


def api(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)


def load_exported(path: Any) -> Any:
    from autocompress.deploy.export import load_exported as load

    return load(path)


def adaptive_load(path: Any) -> Any:
    from autocompress.deploy.runtime import AdaptiveModel

    return AdaptiveModel.load(path)


def search_job(**config: Any) -> Any:
    from autocompress.search import SearchConfig, SearchJob

    base = {"model": "digits-cnn", "dataset": "digits", "agent": "random", "episodes": 2}
    return SearchJob.create(SearchConfig(**(base | config)))


def policy_load(path: Any) -> Any:
    from autocompress.compress.policy import Policy

    return Policy.load(path)


def predict(t: Path, data: Any) -> Callable[[], Any]:
    def call() -> Any:
        from autocompress.deploy.runtime import AdaptiveModel

        return AdaptiveModel.load(copy("pkg", t)).predict(data)

    return call


DEEP = "[" * 100_000 + "]" * 100_000
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)
TRACE_OK = "steps:\n  - {t: 0, battery: 1.0}\n  - {t: 1, battery: 0.5}\n"
DEVICE_16_32 = "legal_wbits: [16, 32]\n"

CASES: dict[str, Callable[[Path], Made]] = {
    # --- policies (evaluate --policy, export --policy FILE, Policy.load) ---
    "policy keep true": lambda t: policy_file(t, layers(keep=True)),
    "policy keep a string number": lambda t: policy_file(t, layers(keep="0.5")),
    "policy keep 1e400 (infinite)": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        write(t / "p.json", '{"model": "digits-cnn", "layers": {"conv2": {"keep": 1e400}}}'),
    ],
    "policy keep a list": lambda t: policy_file(t, layers(keep=[0.5])),
    "policy wbits 8.0": lambda t: policy_file(t, layers(wbits=8.0)),
    "policy wbits -8": lambda t: policy_file(t, layers(wbits=-8)),
    "policy wbits a string": lambda t: policy_file(t, layers(wbits="8")),
    "policy abits 7": lambda t: policy_file(t, layers(abits=7)),
    "policy abits true": lambda t: policy_file(t, layers(abits=True)),
    "policy split 99": lambda t: policy_file(t, {"model": "digits-cnn", "split": 99}),
    "policy split a list": lambda t: policy_file(t, {"model": "digits-cnn", "split": ["relu1"]}),
    "policy split an unknown cut": lambda t: policy_file(t, {"model": "digits-cnn", "split": "nowhere"}),
    "policy adapt 5": lambda t: policy_file(t, {"model": "digits-cnn", "adapt": 5}),
    "policy adapt a typo": lambda t: policy_file(t, {"model": "digits-cnn", "adapt": "tnet"}),
    "policy round_to true": lambda t: policy_file(t, {"model": "digits-cnn", "round_to": True}),
    "policy round_to -4": lambda t: policy_file(t, {"model": "digits-cnn", "round_to": -4}),
    "policy version 2": lambda t: policy_file(t, {"model": "digits-cnn", "version": 2}),
    "policy layers a list": lambda t: policy_file(t, {"model": "digits-cnn", "layers": [1]}),
    "policy default a string": lambda t: policy_file(t, {"model": "digits-cnn", "default": "half"}),
    "policy of another model": lambda t: policy_file(t, {"model": "resnet20", "layers": {"conv2": {"keep": 0.5}}}),
    "policy model a number": lambda t: policy_file(t, {"model": 7}),
    "policy an unknown top-level key": lambda t: policy_file(t, {"model": "digits-cnn", "lyers": {}}),
    "policy nested 100,000 deep": lambda t: [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", DEEP)],
    "policy of non-UTF-8 bytes": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        write(t / "p.json", b'{"model": "\xff\xfe"}'),
    ],
    "policy an empty file": lambda t: [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", "")],
    "policy JSON null": lambda t: [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", "null")],
    "policy a folder": lambda t: [*EVALUATE, "--pretrained", "--policy", str(t)],
    "policy of 9 MB": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        write(t / "p.json", '{"model": "digits-cnn", "note": "' + "x" * 9_000_000 + '"}'),
    ],
    "policy keep a 1 MB string": lambda t: policy_file(t, layers(keep="x" * 1_000_000)),
    "policy layer name of 1 MB": lambda t: policy_file(t, {"model": "digits-cnn", "layers": {"c" * 10**6: {}}}),
    "export --policy a broken file": lambda t: export(t, "--policy", write(t / "p.json", "{")),
    "export --policy pareto:-1": lambda t: export(t, "--policy", "pareto:-1"),
    "export --policy pareto:999": lambda t: export(t, "--policy", "pareto:999"),
    "export --policy episode:3": lambda t: export(t, "--policy", "episode:3"),
    "Policy.load of a missing file": lambda t: api(policy_load, t / "none.json"),
    "Policy.load of a list": lambda t: api(policy_load, write(t / "p.json", "[]")),
    "Policy.load of keep NaN": lambda t: api(
        policy_load, write(t / "p.json", '{"model": "x", "default": {"keep": NaN}}')
    ),
    # --- YAML presets ---
    "env YAML with a self-referencing anchor": lambda t: [
        *SEARCH,
        "--env",
        write(t / "e.yaml", "name: e\ndescription: &a [*a]\ndevice: host\n"),
    ],
    "env YAML alias explosion": lambda t: [*SEARCH, "--env", write(t / "e.yaml", LAUGHS)],
    "env YAML of 9 MB": lambda t: [*SEARCH, "--env", write(t / "e.yaml", "# " + "x" * 9_000_000 + "\nname: e\n")],
    "env YAML an empty file": lambda t: [*SEARCH, "--env", write(t / "e.yaml", "")],
    "env YAML of non-UTF-8 bytes": lambda t: [*SEARCH, "--env", write(t / "e.yaml", b"name: \xff\xfe\n")],
    "env YAML a folder": lambda t: [*SEARCH, "--env", str(t)],
    "env with an unknown device": lambda t: env(t, "device: raspbery-pi-4\n"),
    "env with an unknown link": lambda t: env(t, "device: host\nlink: wifi7\n"),
    "env with an unknown reward mode": lambda t: env(t, "device: host\nreward: {mode: sum}\n"),
    "env with a budget of a string": lambda t: env(t, "device: host\nbudgets:\n  latency_ms: fast\n"),
    "env with an unknown budget name": lambda t: env(t, "device: host\nbudgets:\n  speed: {value: 1}\n"),
    "env with battery range reversed": lambda t: env(t, "device: host\ncontext: {battery: [1.0, 0.2]}\n"),
    "env with an unknown context shift": lambda t: env(t, "device: host\ncontext: {shifts: [fog:3]}\n"),
    "env with a device profile that is garbage": lambda t: env(
        t, f"device: {write(t / 'd.yaml', 'kind: [unclosed')}\n"
    ),
    "space wbits [1, 33]": lambda t: space(t, "wbits: [1, 33]\n"),
    "space wbits []": lambda t: space(t, "keep: {min: 0.2}\nwbits: []\n"),
    "space wbits a string": lambda t: space(t, "wbits: eight\n"),
    "space abits [3]": lambda t: space(t, "abits: [3]\n"),
    "space keep min above max": lambda t: space(t, "keep: {min: 0.9, max: 0.3}\n"),
    "space keep min 0": lambda t: space(t, "keep: {min: 0.0}\n"),
    "space keep NaN": lambda t: space(t, "keep: {min: .nan}\n"),
    "space with no knob": lambda t: space(t, "split: false\n"),
    "space adapt unknown": lambda t: space(t, "adapt: [adabnn]\n"),
    "space round_to a string": lambda t: space(t, "keep: {min: 0.2}\nround_to: four\n"),
    "space reconstruct unknown": lambda t: space(t, "keep: {min: 0.2}\nreconstruct: slow\n"),
    "space fixed_first_last_bits 7": lambda t: space(t, "wbits: device\nfixed_first_last_bits: 7\n"),
    "space wbits none the device runs": lambda t: [
        *space(t, "wbits: [3, 5]\n"),
        "--env",
        "raspberry-pi-4-wifi",
    ],
    "agent unknown hyperparameter": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: {bogus_kw: 1}\n"),
    "agent tpe n_startup_trials x": lambda t: agent(t, "algorithm: tpe\nhyperparameters: {n_startup_trials: x}\n"),
    "agent tpe unknown keyword": lambda t: agent(t, "algorithm: tpe\nhyperparameters: {n_startup: 3}\n"),
    "agent nsga2 population_size 2.5": lambda t: agent(
        t, "algorithm: nsga2\nhyperparameters: {population_size: 2.5}\n"
    ),
    "agent noise_sigma -1": lambda t: agent(t, "algorithm: ddpg\nnoise_sigma: -1\n"),
    "agent noise_sigma NaN": lambda t: agent(t, "algorithm: ddpg\nnoise_sigma: .nan\n"),
    "agent net_arch abc": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: {net_arch: abc}\n"),
    "agent net_arch [0]": lambda t: agent(t, "algorithm: td3\nhyperparameters: {net_arch: [0]}\n"),
    "agent net_arch of floats": lambda t: agent(t, "algorithm: sac\nhyperparameters: {net_arch: [1.5]}\n"),
    "agent learning_rate a string": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: {learning_rate: fast}\n"),
    "agent learning_rate infinite": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: {learning_rate: .inf}\n"),
    "agent sets buffer_size itself": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: {buffer_size: 10}\n"),
    "agent ppo n_steps": lambda t: agent(t, "algorithm: ppo\nhyperparameters: {n_steps: 10}\n"),
    "agent ppo batch_size a string": lambda t: agent(t, "algorithm: ppo\nhyperparameters: {batch_size: big}\n"),
    "agent hyperparameters a list": lambda t: agent(t, "algorithm: ddpg\nhyperparameters: [1, 2]\n"),
    "agent noise_decay 0": lambda t: agent(t, "algorithm: ddpg\nnoise_decay: 0\n"),
    "agent buffer_episodes 0": lambda t: agent(t, "algorithm: ddpg\nbuffer_episodes: 0\n"),
    "agent searcher code not trusted": lambda t: agent(t, "algorithm: greedy-x\nsearcher: os:system\n"),
    "device profile missing its fields": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--device",
        write(t / "d.yaml", "name: d\n"),
    ],
    "device profile a negative peak": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--device",
        write(t / "d.yaml", _device_yaml("peak_gmacs: {fp32: -1.0, int8: 2.0}\n")),
    ],
    "device profile legal_wbits [1, 64]": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--device",
        write(t / "d.yaml", _device_yaml("legal_wbits: [1, 64]\n")),
    ],
    # --- flags ---
    "a budget given twice": lambda t: [*SEARCH, "--budget", "macs=0.5", "--budget", "macs=0.9"],
    "a budget given twice by alias and name": lambda t: [*SEARCH, "--budget", "macs=0.5", "--budget", "macs_ratio=0.6"],
    "a budget :hardish": lambda t: [*SEARCH, "--budget", "macs=0.5:hardish"],
    "a budget macs above 1": lambda t: [*SEARCH, "--budget", "macs=1.5"],
    "a budget of infinity": lambda t: [*SEARCH, "--budget", "latency=inf"],
    "seed 2**64": lambda t: [*SEARCH, "--seed", str(2**64)],
    "seed -1": lambda t: [*SEARCH, "--seed", "-1"],
    "seed abc": lambda t: [*SEARCH, "--seed", "abc"],
    "train seed 2**40": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--seed", str(2**40)],
    "episodes abc": lambda t: [*SEARCH[:-1], "abc"],
    "val-images 0": lambda t: [*SEARCH, "--val-images", "0"],
    "threads -1": lambda t: [*SEARCH, "--threads", "-1"],
    "workers -1": lambda t: [*SEARCH, "--workers", "-1"],
    "run-dir under a file": lambda t: [*SEARCH, "--run-dir", str(Path(write(t / "f", "x")) / "run")],
    "run-dir name too long": lambda t: [*SEARCH, "--run-dir", str(t / ("r" * 300))],
    "exp with a slash": lambda t: [*SEARCH, "--exp", "../../escape"],
    "search without model": lambda t: ["search", "--dataset", "digits"],
    "search --device quantum": lambda t: [*SEARCH, "--device", "quantum"],
    "resume with --episodes below what is logged": lambda t: [
        "search",
        "--resume",
        str(copy("run", t)),
        "--episodes",
        "1",
    ],
    "resume with other --workers": lambda t: ["search", "--resume", str(copy("run", t)), "--workers", "2"],
    "evaluate limit 0": lambda t: [*EVALUATE, "--pretrained", "--limit", "0"],
    "evaluate limit -5": lambda t: [*EVALUATE, "--pretrained", "--limit", "-5"],
    "evaluate repeats 0": lambda t: [*EVALUATE, "--pretrained", "--repeats", "0"],
    "evaluate interval-ms -1": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--device",
        "raspberry-pi-4",
        "--interval-ms",
        "-1",
    ],
    "evaluate unknown link": lambda t: [*EVALUATE, "--pretrained", "--device", "raspberry-pi-4", "--link", "wifi9"],
    "evaluate unknown device": lambda t: [*EVALUATE, "--pretrained", "--device", "raspbery-pi-4"],
    "evaluate unknown criterion": lambda t: [*EVALUATE, "--pretrained", "--criterion", "random-ish"],
    "evaluate unknown reconstruct": lambda t: [*EVALUATE, "--pretrained", "--reconstruct", "slow"],
    "evaluate compute-device tpu": lambda t: [*EVALUATE, "--pretrained", "--compute-device", "tpu"],
    "evaluate without weights": lambda t: [*EVALUATE],
    "evaluate shift severity 0": lambda t: [*EVALUATE, "--pretrained", "--shift", "noise:0"],
    "evaluate shift severity x": lambda t: [*EVALUATE, "--pretrained", "--shift", "noise:x"],
    "evaluate data: shift file missing": lambda t: [*EVALUATE, "--pretrained", "--shift", f"data:{t}/none.npz"],
    "evaluate data: shift string labels": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--shift",
        "data:" + _npz(t / "x.npz", x=np.zeros((4, 1, 8, 8), np.uint8), y=np.array(["a", "b", "c", "d"])),
    ],
    "train epochs -1": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "-1"],
    "train batch-size 0": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--batch-size", "0"],
    "train momentum 2": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--momentum", "2"],
    "train weight-decay -1": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--weight-decay",
        "-1",
    ],
    "train label-smoothing 1.5": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--label-smoothing",
        "1.5",
    ],
    "train lr NaN": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--lr", "nan"],
    "train unknown schedule": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--schedule", "saw"],
    "train warmup-epochs -1": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--warmup-epochs",
        "-1",
    ],
    "train resume a folder that is no run": lambda t: ["train", "--resume", str(t)],
    "train resume config.json garbage": lambda t: _train_run(t, "config.json", "{"),
    "train resume config.json a list": lambda t: _train_run(t, "config.json", "[]"),
    "train resume config.json with an unknown key": lambda t: _train_run(
        t, "config.json", json.dumps({"model": "digits-cnn", "dataset": "digits", "epochz": 3})
    ),
    "train resume checkpoint of random bytes": lambda t: _train_run(t, "checkpoint.pt", os.urandom(3000)),
    "export configs -1": lambda t: export(t, "--adaptive", "--configs", "-1"),
    "export accuracy-tolerance -1": lambda t: export(t, "--adaptive", "--accuracy-tolerance", "-1"),
    "export accuracy-tolerance NaN": lambda t: export(t, "--adaptive", "--accuracy-tolerance", "nan"),
    "export objective unknown": lambda t: export(t, "--adaptive", "--objective", "speed"),
    "export ladder garbage": lambda t: export(t, "--adaptive", "--ladder", "a,b"),
    "export ladder above 1": lambda t: export(t, "--adaptive", "--ladder", "1.5,0.5"),
    "export train-epochs -1": lambda t: export(t, "--adaptive", "--train-epochs", "-1"),
    "export train-lr 0": lambda t: export(t, "--adaptive", "--train-epochs", "1", "--train-lr", "0"),
    "export finetune-epochs -1": lambda t: export(t, "--finetune-epochs", "-1"),
    "export finetune-lr NaN": lambda t: export(t, "--finetune-epochs", "1", "--finetune-lr", "nan"),
    "export test-images 0": lambda t: export(t, "--test-images", "0"),
    "export unknown reconstruct": lambda t: export(t, "--reconstruct", "slow"),
    "export --out is a file": lambda t: ["export", str(copy("run", t)), "--out", write(t / "f", "x")],
    "export --out is the run folder": lambda t: ["export", str(copy("run", t)), "--out", str(t / "run")],
    "simulate images-per-step 0": lambda t: simulate(t, "commute", "--images-per-step", "0"),
    "simulate images-per-step ten million": lambda t: simulate(t, "commute", "--images-per-step", "10000000"),
    "simulate unknown order": lambda t: simulate(t, "commute", "--order", "random"),
    "simulate another dataset": lambda t: simulate(t, "commute", "--dataset", "basic-motions"),
    "simulate --out is a file": lambda t: simulate(t, "commute", "--out", write(t / "f", "x")),
    "profile unknown device": lambda t: ["profile", "--device", "raspbery-pi-4"],
    "compare nothing": lambda t: ["compare"],
    "list unknown": lambda t: ["list", "agentz"],
    # --- data ---
    "a test label of 1000": lambda t: npz_train(t, **(digits_arrays() | {"y_test": np.r_[np.zeros(19, int), 1000]})),
    "string labels": lambda t: npz_train(t, **(digits_arrays() | {"y_train": np.array(["a", "b", "c"] * 20)})),
    "fractional labels": lambda t: npz_train(t, **(digits_arrays() | {"y_train": np.linspace(0, 2, 60)})),
    "negative labels": lambda t: npz_train(t, **(digits_arrays() | {"y_train": -(np.arange(60) % 3)})),
    "one class in train": lambda t: npz_train(t, **(digits_arrays() | {"y_train": np.zeros(60, int)})),
    "inputs of two dimensions": lambda t: npz_train(t, **(digits_arrays() | {"x_train": np.zeros((60, 64))})),
    "inputs with NaN": lambda t: npz_train(t, **(digits_arrays() | {"x_train": np.full((60, 1, 8, 8), np.nan)})),
    "labels one short": lambda t: npz_train(t, **(digits_arrays() | {"y_train": np.arange(59) % 3})),
    "x_val without y_val": lambda t: npz_train(t, **(digits_arrays() | {"x_val": np.zeros((4, 1, 8, 8), np.uint8)})),
    "test of another shape": lambda t: npz_train(
        t, **(digits_arrays() | {"x_test": np.zeros((20, 1, 9, 9), np.uint8)})
    ),
    "mean of the wrong length": lambda t: npz_train(t, **(digits_arrays() | {"mean": np.array([0.1, 0.2])})),
    "std of zero": lambda t: npz_train(t, **(digits_arrays() | {"std": np.array([0.0])})),
    "a pickled object array": lambda t: npz_train(t, **(digits_arrays() | {"y_train": np.array([{}] * 60, object)})),
    "an empty train split": lambda t: npz_train(
        t, **(digits_arrays() | {"x_train": np.zeros((0, 1, 8, 8), np.uint8), "y_train": np.zeros(0, int)})
    ),
    "a dataset factory that exits": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        pyfile(t, "import sys\ndef data():\n    sys.exit(0)\n") + ":data",
    ],
    "a dataset factory that raises": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        pyfile(t, "def data():\n    raise RuntimeError('boom')\n") + ":data",
    ],
    "a dataset factory returning a dict": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        pyfile(t, "def data():\n    return {}\n") + ":data",
    ],
    "a model factory that exits": lambda t: [
        "train",
        "--model",
        pyfile(t, "import sys\ndef build(num_classes):\n    sys.exit(3)\n") + ":build",
        "--dataset",
        "digits",
        "--epochs",
        "1",
    ],
    "a model factory that raises": lambda t: [
        "train",
        "--model",
        pyfile(t, "def build(num_classes):\n    raise ValueError('no')\n") + ":build",
        "--dataset",
        "digits",
    ],
    "a model factory returning a number": lambda t: [
        "train",
        "--model",
        pyfile(t, "def build():\n    return 3\n") + ":build",
        "--dataset",
        "digits",
    ],
    "a model factory that is missing": lambda t: [
        "train",
        "--model",
        pyfile(t, "x = 1\n") + ":build",
        "--dataset",
        "digits",
    ],
    "a model file that does not import": lambda t: [
        "train",
        "--model",
        write(t / "broken.py", "def (:\n") + ":build",
        "--dataset",
        "digits",
    ],
    "an image folder without classes": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        str(Path(write(t / "imgs" / "train" / "x.txt", "x")).parent.parent),
    ],
    "drift data of another shape (npz)": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--shift",
        "data:" + _npz(t / "x.npz", x=np.zeros((4, 1, 9, 9), np.uint8), y=np.zeros(4, int)),
    ],
    # --- run folders ---
    "best_policy.json a list": lambda t: ["export", run_with(t, "best_policy.json", "[1, 2]"), "--out", str(t / "o")],
    "best_policy.json without policy": lambda t: [
        "export",
        run_with(t, "best_policy.json", '{"reward": 1.0}'),
        "--out",
        str(t / "o"),
    ],
    "best_policy.json a directory": lambda t: _best_dir(t),
    "best_policy.json of 9 MB": lambda t: [
        "export",
        run_with(t, "best_policy.json", '{"x": "' + "y" * 9_000_000 + '"}'),
        "--out",
        str(t / "o"),
    ],
    "best_policy.json an invalid policy": lambda t: [
        "export",
        run_with(t, "best_policy.json", json.dumps({"reward": 1.0, "policy": {"model": "digits-cnn", "split": 5}})),
        "--out",
        str(t / "o"),
    ],
    "pareto.json a dict": lambda t: ["export", run_with(t, "pareto.json", "{}"), "--out", str(t / "o")],
    "pareto.json of garbage entries": lambda t: [
        "export",
        run_with(t, "pareto.json", "[1, 2]"),
        "--out",
        str(t / "o"),
        "--policy",
        "pareto:0",
    ],
    "config.json a list": lambda t: ["export", run_with(t, "config.json", "[]"), "--out", str(t / "o")],
    "config.json of non-UTF-8 bytes": lambda t: [
        "export",
        run_with(t, "config.json", b"\xff\xfe"),
        "--out",
        str(t / "o"),
    ],
    "config.json with a bad episodes": lambda t: [
        "search",
        "--resume",
        str(edit_json(copy("run", t) / "config.json", lambda c: c | {"episodes": "many"}).parent),
    ],
    "config.json naming code": lambda t: [
        "export",
        str(edit_json(copy("run", t) / "config.json", lambda c: c | {"model": "evil.py:build"}).parent),
        "--out",
        str(t / "o"),
    ],
    "config.json resolved damaged": lambda t: [
        "search",
        "--resume",
        str(edit_json(copy("run", t) / "config.json", lambda c: c | {"resolved": {"agent": 3}}).parent),
    ],
    "progress.csv with a wrong header": lambda t: ["search", "--resume", run_with(t, "progress.csv", "a,b\n1,2\n")],
    "progress.csv with a row out of order": lambda t: ["search", "--resume", _progress_swapped(t)],
    "progress.csv a symlink out of the folder": lambda t: ["search", "--resume", _progress_link(t)],
    "checkpoints/agent.json truncated": lambda t: [
        "search",
        "--resume",
        _damage(copy("ddpg", t) / "checkpoints" / "agent.json", 10),
        "--episodes",
        "6",
    ],
    "checkpoints/agent.pt random bytes": lambda t: [
        "search",
        "--resume",
        _replace(copy("ddpg", t) / "checkpoints" / "agent.pt", os.urandom(4000)),
        "--episodes",
        "6",
    ],
    "checkpoints/replay.npz truncated": lambda t: [
        "search",
        "--resume",
        _damage(copy("ddpg", t) / "checkpoints" / "replay.npz", 100),
        "--episodes",
        "6",
    ],
    "SearchJob with episodes 0": lambda t: api(search_job, episodes=0),
    "SearchJob with a seed of 2**33": lambda t: api(search_job, seed=2**33),
    "SearchJob with an unknown env": lambda t: api(search_job, env="moon-base"),
    "SearchJob with a NaN budget": lambda t: api(search_job, budgets={"macs_ratio": float("nan")}),
    "SearchJob with a string budget": lambda t: api(search_job, budgets={"macs_ratio": "half"}),
    "SearchJob with val_images 2": lambda t: api(search_job, val_images=2),
    "SearchJob into a run folder with files": lambda t: api(_create_in, Path(write(t / "r" / "x", "x")).parent),
    # --- exported models and packages ---
    "load_exported of a missing folder": lambda t: api(load_exported, t / "none"),
    "load_exported of a run folder": lambda t: api(load_exported, copy("run", t)),
    "load_exported model.pt random bytes": lambda t: api(
        load_exported, _replace(copy("export", t) / "model.pt", os.urandom(3000))
    ),
    "load_exported model.pt truncated": lambda t: api(load_exported, _damage(copy("export", t) / "model.pt", 2000)),
    "load_exported model.pt a pickle payload": lambda t: api(load_exported, _pickled(copy("export", t) / "model.pt")),
    "load_exported model.pt a list": lambda t: api(load_exported, _saved(t, [1, 2])),
    "load_exported model.pt of another format": lambda t: api(load_exported, _saved(t, {"format": 99})),
    "load_exported model.pt with weights that do not fit": lambda t: api(load_exported, _misfit(t)),
    "load_exported model.pt naming code": lambda t: api(load_exported, _saved_with(t, model="evil.py:build")),
    "AdaptiveModel.load of a missing folder": lambda t: api(adaptive_load, t / "none"),
    "AdaptiveModel.load of an export (no manifest)": lambda t: api(adaptive_load, copy("export", t)),
    "manifest not JSON": lambda t: api(adaptive_load, _replace(copy("pkg", t) / "manifest.json", b"{")),
    "manifest a list": lambda t: api(adaptive_load, _replace(copy("pkg", t) / "manifest.json", b"[]")),
    "manifest with no configurations": lambda t: api(adaptive_load, pkg_with(t, manifest_set(["configs"], []))),
    "manifest with an empty bandwidth grid": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["bandwidth_grid"], []))
    ),
    "manifest bandwidth grid unsorted": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["bandwidth_grid"], [1.0, 0.0]))
    ),
    "manifest config path ../../etc/passwd": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "path"], "../../etc/passwd"))
    ),
    "manifest config path absolute": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "path"], "/etc/hostname"))
    ),
    "manifest config file missing": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "path"], "configs/none/model.onnx"))
    ),
    "manifest costs of the wrong length": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "costs", "latency_ms"], [1.0]))
    ),
    "manifest val_accuracy a string": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "val_accuracy"], "high"))
    ),
    "manifest val_accuracy 5": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["configs", 0, "val_accuracy"], 5))
    ),
    "manifest a duplicated configuration id": lambda t: api(
        adaptive_load, pkg_with(t, lambda m: m | {"configs": [m["configs"][0], m["configs"][0]]})
    ),
    "manifest monitor class_mean of the wrong shape": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["monitor", "class_mean"], [[0.0]]))
    ),
    "manifest monitor window 0": lambda t: api(adaptive_load, pkg_with(t, manifest_set(["monitor", "window"], 0))),
    "manifest input shape empty": lambda t: api(adaptive_load, pkg_with(t, manifest_set(["input", "shape"], []))),
    "manifest input dtype complex": lambda t: api(
        adaptive_load, pkg_with(t, manifest_set(["input", "dtype"], "complex64"))
    ),
    "manifest of another format version": lambda t: api(adaptive_load, pkg_with(t, manifest_set(["version"], 99))),
    "manifest unknown key": lambda t: api(adaptive_load, pkg_with(t, lambda m: m | {"confgis": []})),
    "manifest of 9 MB": lambda t: api(adaptive_load, pkg_with(t, lambda m: m | {"note": "x" * 9_000_000})),
    "package ONNX of garbage bytes": lambda t: api(adaptive_load, _garbage_onnx(t)),
    "package ONNX truncated": lambda t: api(adaptive_load, _truncated_onnx(t)),
    "package ONNX a symlink out": lambda t: api(adaptive_load, _onnx_link(t)),
    "simulate a package with garbage ONNX": lambda t: [
        "simulate",
        str(Path(_garbage_onnx(t))),
        "--trace",
        "commute",
        "--images-per-step",
        "8",
    ],
    "shared store of random bytes": lambda t: api(
        adaptive_load, _replace(copy("shared", t) / "shared.npz", os.urandom(900))
    ),
    "shared references not JSON": lambda t: api(adaptive_load, _shared_refs(t, lambda refs: "{")),
    "shared references a list": lambda t: api(adaptive_load, _shared_refs(t, lambda refs: "[]")),
    "shared reference index out of range": lambda t: api(
        adaptive_load, _shared_refs(t, lambda refs: json.dumps(_bump_index(refs, 10**6)))
    ),
    "shared reference to a missing tensor": lambda t: api(
        adaptive_load, _shared_refs(t, lambda refs: json.dumps(_rename_tensor(refs)))
    ),
    "predict on images of another shape": lambda t: predict(t, np.zeros((2, 1, 9, 9), np.uint8)),
    "predict on float images for a uint8 package": lambda t: predict(t, np.zeros((2, 1, 8, 8), np.float64)),
    "predict on a string": lambda t: predict(t, "image"),
    # --- traces ---
    "trace steps abc": lambda t: simulate(t, trace(t, "steps: abc\n")),
    "trace steps a list of numbers": lambda t: simulate(t, trace(t, "steps: [1, 2, 3]\n")),
    "trace a top-level list": lambda t: simulate(t, trace(t, "- {t: 0}\n")),
    "trace battery 2": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, battery: 2}\n")),
    "trace battery NaN": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, battery: .nan}\n")),
    "trace battery a word": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, battery: full}\n")),
    "trace free_memory 0": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, free_memory: 0}\n")),
    "trace negative bandwidth": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, bandwidth_scale: -1}\n")),
    "trace a typo'd column": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, batery: 0.5}\n")),
    "trace an unknown shift": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, shift: fog:3}\n")),
    "trace a shift plugin not trusted": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, shift: os:system:1}\n")),
    "trace of 200,000 steps": lambda t: simulate(t, trace(t, "steps:\n" + "  - {t: 0}\n" * 200_000)),
    "trace of 9 MB": lambda t: simulate(t, trace(t, "# " + "x" * 9_000_000 + "\n" + TRACE_OK)),
    "trace alias explosion": lambda t: simulate(t, trace(t, LAUGHS + "steps: [{t: 0}]\n")),
    "trace CSV of random bytes": lambda t: simulate(t, trace(t, os.urandom(2000).decode("latin-1"), ".csv")),
    "trace CSV with an unknown column": lambda t: simulate(t, trace(t, "t,battery,speed\n0,1.0,3\n", ".csv")),
    "trace CSV with a text battery": lambda t: simulate(t, trace(t, "t,battery\n0,full\n", ".csv")),
    "trace CSV with only a header": lambda t: simulate(t, trace(t, "t,battery\n", ".csv")),
    "trace a folder": lambda t: simulate(t, str(t)),
    "trace latency budget negative": lambda t: simulate(t, trace(t, "steps:\n  - {t: 0, latency_budget_ms: -5}\n")),
}


def _device_yaml(extra: str) -> str:
    from autocompress.hardware.profiles import DEVICES_DIR

    text = (DEVICES_DIR / "raspberry-pi-4.yaml").read_text()
    keys = {line.split(":")[0] for line in extra.splitlines() if ":" in line}
    kept = [line for line in text.splitlines() if line.split(":")[0] not in keys]
    return "\n".join(kept) + "\n" + extra


def _best_dir(t: Path) -> list[str]:
    folder = copy("run", t)
    (folder / "best_policy.json").unlink()
    (folder / "best_policy.json").mkdir()
    return ["export", str(folder), "--out", str(t / "o")]


def _progress_swapped(t: Path) -> str:
    folder = copy("run", t)
    lines = (folder / "progress.csv").read_text().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    (folder / "progress.csv").write_text("".join(lines))
    return str(folder)


def _progress_link(t: Path) -> str:
    folder = copy("run", t)
    outside = Path(write(t / "outside.csv", (folder / "progress.csv").read_text()))
    (folder / "progress.csv").unlink()
    (folder / "progress.csv").symlink_to(outside)
    return str(folder)


def _damage(path: Path, keep: int) -> str:
    """Cut ``path`` to its first ``keep`` bytes; returns the run folder holding it."""
    path.write_bytes(path.read_bytes()[:keep])
    return str(_run_of(path))


def _replace(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(_run_of(path))


def _run_of(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _pickled(path: Path) -> str:
    import pickle

    from tests.cli.test_fault_battery import Payload

    path.write_bytes(pickle.dumps(Payload()))
    return str(path.parent)


def _onnx_changed(t: Path, change: Callable[[bytes], bytes]) -> str:
    """A package copy whose configurations' ONNX files are ``change(their bytes)``."""
    folder = copy("pkg", t)
    for onnx in (folder / "configs").rglob("*.onnx"):
        onnx.write_bytes(change(onnx.read_bytes()))
    return str(folder)


def _garbage_onnx(t: Path) -> str:
    return _onnx_changed(t, lambda data: os.urandom(3000))


def _truncated_onnx(t: Path) -> str:
    return _onnx_changed(t, lambda data: data[:5000])


def _onnx_link(t: Path) -> str:
    folder = copy("pkg", t)
    outside = Path(write(t / "elsewhere.onnx", next((folder / "configs").rglob("*.onnx")).read_bytes()))
    first = next((folder / "configs").rglob("*.onnx"))
    first.unlink()
    first.symlink_to(outside)
    return str(folder)


def _saved(t: Path, value: Any) -> str:
    import torch

    folder = copy("export", t)
    torch.save(value, folder / "model.pt")
    return str(folder)


def _saved_with(t: Path, **changes: Any) -> str:
    import torch

    folder = copy("export", t)
    saved = torch.load(folder / "model.pt", weights_only=True)
    torch.save(saved | changes, folder / "model.pt")
    return str(folder)


def _misfit(t: Path) -> str:
    import torch

    folder = copy("export", t)
    saved = torch.load(folder / "model.pt", weights_only=True)
    name = next(iter(saved["state_dict"]))
    saved["state_dict"][name] = torch.zeros(3, 3, 3)
    torch.save(saved, folder / "model.pt")
    return str(folder)


def _train_run(t: Path, name: str, text: str | bytes) -> list[str]:
    folder = copy("train", t)
    write(folder / name, text)
    return ["train", "--resume", str(folder)]


def _shared_refs(t: Path, change: Callable[[Any], str]) -> str:
    """A shared-weights package whose first configuration's shared.json is replaced by ``change(its refs)``."""
    folder = copy("shared", t)
    refs = next(folder.rglob("shared.json"))
    refs.write_text(change(json.loads(refs.read_text())))
    return str(folder)


def _first_ref(refs: dict[str, Any]) -> dict[str, Any]:
    return next(iter(next(iter(refs.values())).values()))


def _bump_index(refs: dict[str, Any], value: int) -> dict[str, Any]:
    ref = _first_ref(refs)
    ref["index"] = [[value], *ref["index"][1:]] if ref["index"] else [[value]]
    return refs


def _rename_tensor(refs: dict[str, Any]) -> dict[str, Any]:
    _first_ref(refs)["tensor"] = "no-such-tensor"
    return refs


def _create_in(folder: Path) -> Any:
    from autocompress.search import SearchConfig, SearchJob

    return SearchJob.create(SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=1), folder)


# --- documented acceptances: exit 0 and the promised result ---------------------------------------------------------

Check = Callable[[Path, int, str, str], str | None]


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "progress.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _cut_progress(t: Path) -> list[str]:
    folder = copy("run", t)
    text = (folder / "progress.csv").read_text()
    (folder / "progress.csv").write_text(text[: text.rstrip("\n").rfind("\n") + 40])  # last row cut mid-way
    return ["search", "--resume", str(folder)]


def _empty_progress(t: Path) -> list[str]:
    folder = copy("run", t)
    (folder / "progress.csv").write_text("")
    return ["search", "--resume", str(folder)]


def _expect_rows(n: int) -> Check:
    def check(t: Path, code: int, out: str, err: str) -> str | None:
        rows = _rows(t / "run")
        episodes = [r["episode"] for r in rows]
        if episodes != [str(i) for i in range(n)] or any(None in r or r["reward"] == "" for r in rows):
            return f"progress.csv episodes {episodes}, expected 0..{n - 1} each once and whole"
        return None

    return check


def _json_field(key: str, expected: Any) -> Check:
    def check(t: Path, code: int, out: str, err: str) -> str | None:
        value = json.loads(out[out.index("{") :]).get(key)
        return None if value == expected else f"{key} = {value!r}, expected {expected!r}"

    return check


def _stderr_has(text: str) -> Check:
    return lambda t, code, out, err: None if text in err else f"stderr lacks '{text}': {err[-300:]!r}"


def _first_last_bits(t: Path, code: int, out: str, err: str) -> str | None:
    best = json.loads(next((t / "runs").rglob("best_policy.json")).read_text())["policy"]
    bits = {name: s["wbits"] for name, s in best["layers"].items() if "wbits" in s}
    low = {name: b for name, b in bits.items() if b not in (16, 32)}
    if low or "first and last layers get 16" not in err:
        return f"bits {bits}, stderr {err[-300:]!r}"
    return None


def _trained(t: Path, code: int, out: str, err: str) -> str | None:
    """The run trained: its metrics.csv holds a finite, non-zero train loss for every epoch."""
    with next((t / "runs").rglob("metrics.csv")).open(newline="") as handle:
        losses = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    if not losses or not all(np.isfinite(loss) and loss > 0 for loss in losses):
        return f"no training happened: train losses {losses}"
    return None


ACCEPTED: dict[str, tuple[Callable[[Path], list[str]], Check]] = {
    "resume after a row cut mid-write": (_cut_progress, _expect_rows(4)),
    "resume with an empty progress.csv": (_empty_progress, _expect_rows(4)),
    "resume a finished run": (
        lambda t: ["search", "--resume", str(copy("run", t))],
        _stderr_has("has logged all its 4 episodes"),
    ),
    "resume a finished run with more episodes": (
        lambda t: ["search", "--resume", str(copy("run", t)), "--episodes", "5"],
        _expect_rows(5),
    ),
    "evaluate --list-shifts alone": (
        lambda t: ["evaluate", "--list-shifts"],
        lambda t, code, out, err: None if "gaussian_noise" in out else out[-200:],
    ),
    "evaluate a data: shift counts its own images": (
        lambda t: [
            *EVALUATE,
            "--pretrained",
            "--json",
            "--shift",
            "data:" + _npz(t / "x.npz", x=np.zeros((37, 1, 8, 8), np.uint8), y=np.arange(37) % 10),
        ],
        _json_field("images", 37),
    ),
    "whole-number float labels": (
        lambda t: npz_train(t, **(digits_arrays() | {"y_train": (np.arange(60) % 3).astype(float)})),
        _trained,
    ),
    "a dataset smaller than a batch trains": (lambda t: npz_train(t, **digits_arrays(n=24)), _trained),
    "val-images above the split warns and uses all": (
        lambda t: [*SEARCH, "--val-images", "1000000000"],
        _stderr_has("all 180 are used"),
    ),
    "a tiny validation split warns": (
        lambda t: npz_train(t, **digits_arrays(n=30)),
        _stderr_has("validation images"),
    ),
    "a model factory that needs in_channels": (
        lambda t: [
            "train",
            "--model",
            pyfile(
                t,
                "def build(num_classes, in_channels):\n"
                "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.Flatten(),"
                " nn.Linear(8 * 6 * 6, num_classes))\n",
            )
            + ":build",
            "--dataset",
            "digits",
            "--epochs",
            "1",
        ],
        _trained,
    ),
    "a device with only 16- and 32-bit weights": (
        lambda t: [
            *SEARCH,
            "--agent",
            "random",
            "--space",
            "prune-quant",
            "--env",
            write(
                t / "e.yaml",
                f"name: e\ndescription: e\ndevice: {write(t / 'd.yaml', _device_yaml(DEVICE_16_32))}\n",
            ),
        ],
        _first_last_bits,
    ),
}


class Hang(BaseException):  # not an Exception: no library's `except Exception` may swallow it
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang


def run_case(made: Made) -> tuple[str, int, str, str, str | None]:
    """Try one input under the cap; returns (kind, exit code, stdout, stderr, detail)."""
    # A hang is CPU time past the cap (a loop that never ends; the time does not grow when other jobs share the
    # machine, as wall-clock time does; the process's CPU time counts every thread, so the cap scales with torch's)
    # or wall-clock time past WALL_CAP_S (a wait that never ends).
    handlers = signal.signal(signal.SIGALRM, _alarm), signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, CAP_S * max(1, torch.get_num_threads()))
    signal.alarm(WALL_CAP_S)
    try:
        if callable(made):
            try:
                made()
            except AutoCompressError as exc:
                text = str(exc)
                return ("one-line" if "\n" not in text else "other"), 1, "", f"error: {text}", None
            except Hang:
                return "hang", -1, "", "", None
            except BaseException as exc:
                import traceback

                return "traceback", -1, "", "", "".join(traceback.format_exception(exc))[-3000:]
            return "silent", 0, "", "", None
        try:
            code, err, trace = _attempt_with_out(made)
        except Hang:
            return "hang", -1, "", "", None
        if trace:
            return "traceback", -1, "", err, trace[-3000:]
        return "", code, _LAST_OUT[0], err, None
    finally:
        signal.alarm(0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, handlers[0])
        signal.signal(signal.SIGPROF, handlers[1])


_LAST_OUT = [""]


def _attempt_with_out(argv: list[str]) -> tuple[int, str, str | None]:
    """:func:`attempt` keeping stdout too (the acceptances check what a verb printed)."""
    import io
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from autocompress.cli import main

    err, out = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):
            code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Hang:
        raise
    except Exception:
        return -1, err.getvalue(), traceback.format_exc()
    finally:
        _LAST_OUT[0] = out.getvalue()
    return code, err.getvalue(), None


def classify_error(code: int, err: str) -> str:
    """Progress and warning lines may come first; the error is one ``error:`` line, the last."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    if code == 0:
        return "silent"
    if code == 1 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err:
        return "one-line"
    return "other"


def error_length(err: str, folder: Path) -> int:
    """The error line's length with the case folder written as the short relative path a user would type."""
    line = [line for line in err.splitlines() if line.startswith("error")][-1]
    return len(line.replace(str(folder.parent.parent), "").replace(str(folder.parent), "").replace("error: ", "", 1))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One digits run (random, 4 episodes, full space on raspberry-pi-4-wifi), a ddpg run of 3, its export and its
    adaptive package: the material the run-folder and package cases damage (each on its own copy)."""
    from autocompress.cli import main

    root = tmp_path_factory.mktemp("battery-fixtures")
    common = ["search", "--model", "digits-cnn", "--dataset", "digits", "--env", "raspberry-pi-4-wifi"]
    assert (
        main([*common, "--agent", "random", "--space", "full", "--episodes", "4", "--run-dir", str(root / "run")]) == 0
    )
    assert main([*common, "--agent", "ddpg", "--episodes", "3", "--run-dir", str(root / "ddpg")]) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "export")]) == 0
    train = ["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "1", "--run-dir", str(root / "train")]
    assert main(train) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "pkg"), "--adaptive", "--configs", "3"]) == 0
    shared = ["export", str(root / "run"), "--out", str(root / "shared"), "--adaptive", "--configs", "2"]
    assert main([*shared, "--share-weights", "--ladder", "none"]) == 0
    FIX.update({k: root / k for k in ("run", "ddpg", "export", "pkg", "train", "shared")})
    return FIX


@pytest.mark.slow  # ~30 s: 200+ bad inputs end to end; tests/cli/test_fault_battery.py keeps a narrow one by default
def test_the_wide_fault_battery(
    fixtures: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["autocompress"])
    tally = {"one-line": 0, "traceback": 0, "silent": 0, "hang": 0, "other": 0, "long": 0}
    failures: list[str] = []
    everything: dict[str, Callable[[Path], Made]] = {**FIRST_CASES, **CASES}
    for i, (name, make) in enumerate(everything.items()):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        kind, code, out, err, detail = run_case(make(folder))
        kind = kind or classify_error(code, err)
        tally[kind] += 1
        if kind != "one-line":
            failures.append(f"{name}: {kind} (exit {code}) {err.strip()[-400:]!r}\n{detail or ''}")
        elif error_length(err, folder) > MAX_LINE:
            tally["long"] += 1
            failures.append(f"{name}: a line of {error_length(err, folder)} characters: {err.strip()[-400:]!r}")
    accepted = 0
    for j, (name, (make, check)) in enumerate(ACCEPTED.items()):
        folder = tmp_path / f"accept{j}"
        folder.mkdir()
        monkeypatch.setenv("AUTOCOMPRESS_RUNS_DIR", str(folder / "runs"))
        kind, code, out, err, detail = run_case(make(folder))
        try:
            problem = detail or (f"exit {code}: {err.strip()[-300:]!r}" if code != 0 else check(folder, code, out, err))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}; stdout {out[-200:]!r}, stderr {err[-300:]!r}"
        if problem:
            failures.append(f"accepted case '{name}': {problem}")
        else:
            accepted += 1
    assert not (tmp_path / "payload-ran").exists(), "a pickled payload ran"
    with capsys.disabled():
        print(
            f"\nwide fault battery: {len(everything)} bad inputs: {tally['one-line']} one-line errors, "
            f"{tally['traceback']} tracebacks, {tally['silent']} silent accepts, {tally['hang']} hangs, "
            f"{tally['other']} other ({tally['long']} over {MAX_LINE} characters); "
            f"{accepted}/{len(ACCEPTED)} documented acceptances deliver"
        )
    assert len(everything) >= 200
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
