"""A fault battery: malformed inputs across every verb. Each must give one line on stderr (``error: …``) and exit
code 1 — never a traceback, never a silent success — and a pickled weights file's payload must never run.

The summary line (inputs tried, one-line errors, tracebacks) prints with ``pytest -s`` and is asserted here."""

from __future__ import annotations

import io
import json
import os
import pickle
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.cli import main

Case = Callable[[Path], list[str]]
MARKER = "payload-ran"


class Payload:
    """Unpickling this would create a marker file: weights loading must refuse it, never run it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {MARKER}",))


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def policy(tmp: Path, layers: object) -> str:
    return write(tmp / "policy.json", json.dumps({"model": "digits-cnn", "layers": layers}))


def weights(tmp: Path) -> str:
    from autocompress.models import build_model

    path = tmp / "good.pt"
    torch.save(build_model("digits-cnn", 10, (1, 8, 8)).state_dict(), path)
    return str(path)


def run_folder(tmp: Path, config: str | None = "{}", best: str | None = None) -> str:
    folder = tmp / "run"
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write(folder / "config.json", config)
    if best is not None:
        write(folder / "best_policy.json", best)
    return str(folder)


SEARCH = ["search", "--model", "digits-cnn", "--dataset", "digits", "--episodes", "2"]
EVALUATE = ["evaluate", "--model", "digits-cnn", "--dataset", "digits"]
ENV = "name: x\ndescription: x\ndevice: host\n"

CASES: dict[str, Case] = {
    # presets and profiles
    "env YAML that does not parse": lambda t: [*SEARCH, "--env", write(t / "e.yaml", "name: [unclosed\n")],
    "env YAML with an unknown key": lambda t: [*SEARCH, "--env", write(t / "e.yaml", ENV + "budgetz: {}\n")],
    "env YAML that is a list": lambda t: [*SEARCH, "--env", write(t / "e.yaml", "- 1\n- 2\n")],
    "env YAML with a negative budget": lambda t: [
        *SEARCH,
        "--env",
        write(t / "e.yaml", ENV + "budgets:\n  latency_ms: {value: -1, hard: true}\n"),
    ],
    "space YAML with an unknown key": lambda t: [
        *SEARCH,
        "--space",
        write(t / "s.yaml", "name: s\ndescription: s\nkeeep: {min: 0.2}\n"),
    ],
    "space YAML with keep > 1": lambda t: [
        *SEARCH,
        "--space",
        write(t / "s.yaml", "name: s\ndescription: s\nkeep: {min: 0.2, max: 3.0}\n"),
    ],
    "agent YAML with a string for a number": lambda t: [
        *SEARCH,
        "--agent",
        write(t / "a.yaml", "name: a\nalgorithm: ddpg\nwarmup_episodes: many\n"),
    ],
    "agent YAML with an unknown algorithm": lambda t: [
        *SEARCH,
        "--agent",
        write(t / "a.yaml", "name: a\nalgorithm: dqn-9000\n"),
    ],
    "device profile that is random bytes": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--device",
        write(t / "d.yaml", os.urandom(300)),
    ],
    # policies
    "policy file that is not JSON": lambda t: [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", "{oops")],
    "policy with a string keep": lambda t: [*EVALUATE, "--pretrained", "--policy", policy(t, {"conv1": {"keep": "a"}})],
    "policy with a NaN keep": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        write(t / "p.json", '{"model": "digits-cnn", "layers": {"conv2": {"keep": NaN}}}'),
    ],
    "policy with a negative keep": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        policy(t, {"conv2": {"keep": -1}}),
    ],
    "policy with 10^9 weight bits": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        policy(t, {"conv2": {"wbits": 10**9}}),
    ],
    "policy naming an unknown layer": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--policy",
        policy(t, {"conv99": {"keep": 0.5}}),
    ],
    "policy that is a JSON list": lambda t: [*EVALUATE, "--pretrained", "--policy", write(t / "p.json", "[1, 2]")],
    # weights
    "weights truncated to half": lambda t: [
        *EVALUATE,
        "--weights",
        write(t / "w.pt", Path(weights(t)).read_bytes()[:3000]),
    ],
    "weights of random bytes": lambda t: [*EVALUATE, "--weights", write(t / "w.pt", os.urandom(5000))],
    "weights that are a plain pickle with a payload": lambda t: [
        *EVALUATE,
        "--weights",
        write(t / "w.pt", pickle.dumps(Payload())),
    ],
    "weights of another architecture": lambda t: [
        "evaluate",
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--weights",
        weights(t),
    ],
    "weights path that does not exist (unicode, spaces)": lambda t: [
        *EVALUATE,
        "--weights",
        str(t / "ünï cödé" / "missing weights.pt"),
    ],
    "both --pretrained and --weights": lambda t: [*EVALUATE, "--pretrained", "--weights", weights(t)],
    # budgets and numbers
    "an impossible budget": lambda t: [*SEARCH, "--budget", "macs=0.0001"],
    "a budget without a value": lambda t: [*SEARCH, "--budget", "macs"],
    "a NaN budget": lambda t: [*SEARCH, "--budget", "macs=nan"],
    "a negative budget": lambda t: [*SEARCH, "--budget", "latency_ms=-3"],
    "an unknown budget": lambda t: [*SEARCH, "--budget", "speed=3"],
    "zero episodes": lambda t: [*SEARCH[:-1], "0"],
    "negative episodes": lambda t: [*SEARCH[:-1], "-5"],
    "too few validation images": lambda t: [*SEARCH, "--val-images", "3"],
    "zero threads": lambda t: [*EVALUATE, "--pretrained", "--threads", "0"],
    "a severity of 9": lambda t: [*EVALUATE, "--pretrained", "--shift", "noise:9"],
    "an unknown shift": lambda t: [*EVALUATE, "--pretrained", "--shift", "fog:2"],
    "an unknown split": lambda t: [*EVALUATE, "--pretrained", "--split", "holdout"],
    "zero training epochs": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--epochs", "0"],
    "a negative learning rate": lambda t: ["train", "--model", "digits-cnn", "--dataset", "digits", "--lr", "-1"],
    # names
    "an unknown model": lambda t: [*EVALUATE[:2], "resnet21", "--dataset", "digits", "--pretrained"],
    "an unknown agent": lambda t: [*SEARCH, "--agent", "ddgp"],
    "an unknown env": lambda t: [*SEARCH, "--env", "raspbery-pi-4"],
    "an unknown space": lambda t: [*SEARCH, "--space", "prune-quantt"],
    "an unknown list": lambda t: ["list", "modelz"],
    "an unknown dataset": lambda t: [*SEARCH[:4], "--dataset", "cifar100"],
    # data
    "CIFAR-10 from a folder that does not exist": lambda t: [
        "evaluate",
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--pretrained",
        "--data-dir",
        str(t / "nope"),
    ],
    "a CIFAR-10 batch of the wrong size": lambda t: [
        "evaluate",
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--pretrained",
        "--data-dir",
        _short_cifar(t),
    ],
    "a dataset .npz of random bytes": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        write(t / "d.npz", os.urandom(500)),
    ],
    "a dataset .npz without labels": lambda t: [
        "train",
        "--model",
        "digits-cnn",
        "--dataset",
        _npz(t / "d.npz", x_train=np.zeros((4, 1, 8, 8))),
    ],
    "drift data that does not match the dataset": lambda t: [
        *EVALUATE,
        "--pretrained",
        "--shift",
        "data:" + _npz(t / "x.npz", x=np.zeros((4, 3, 5, 5)), y=np.zeros(4, int)),
    ],
    # run folders
    "resume a folder without config.json": lambda t: [*SEARCH, "--resume", run_folder(t, None)],
    "resume a folder whose config.json is garbage": lambda t: ["search", "--resume", run_folder(t, "{not json")],
    "resume a folder whose config.json is empty JSON": lambda t: ["search", "--resume", run_folder(t, "{}")],
    "export a run without a best policy": lambda t: ["export", run_folder(t, "{}"), "--out", str(t / "o")],
    "export into --policy pareto:x": lambda t: ["export", run_folder(t), "--out", str(t / "o"), "--policy", "pareto:x"],
    "a run folder that is a file": lambda t: ["export", write(t / "file", "x"), "--out", str(t / "o")],
    "a new run in a folder with files": lambda t: [
        *SEARCH,
        "--run-dir",
        str(Path(write(t / "my run ☃" / "x", "x")).parent),
    ],
    "compare a folder that is no run": lambda t: ["compare", str(t)],
    "adaptive export with zero configurations": lambda t: [
        "export",
        run_folder(t),
        "--out",
        str(t / "o"),
        "--adaptive",
        "--configs",
        "0",
    ],
    "simulate a folder without a package": lambda t: ["simulate", str(t), "--trace", "commute"],
    "simulate an unknown trace": lambda t: ["simulate", str(t), "--trace", "marathon"],
    # storage
    "an unknown storage scheme": lambda t: [*SEARCH, "--agent", "tpe", "--storage", "foo://bar"],
    "a storage URL that is no URL": lambda t: [*SEARCH, "--agent", "tpe", "--storage", "not a url"],
    "zero workers": lambda t: [*SEARCH, "--workers", "0"],
    "a thousand workers": lambda t: [*SEARCH, "--workers", "1000"],
    "workers for an Optuna agent": lambda t: [*SEARCH, "--agent", "tpe", "--workers", "2"],
    "workers that is no number": lambda t: [*SEARCH, "--workers", "two"],
    "SQLite storage in a folder that does not exist": lambda t: [
        *SEARCH,
        "--agent",
        "tpe",
        "--storage",
        f"sqlite:///{t}/no/such/dir/s.db",
    ],
}


def _short_cifar(folder: Path) -> str:
    """All six CIFAR-10 batch files, one of them 1,000 random bytes (a truncated download)."""
    root = folder / "c" / "cifar-10-batches-bin"
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        write(root / f"{name}.bin", os.urandom(1000) if name == "data_batch_3" else bytes(3073 * 2))
    return str(root.parent)


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def attempt(argv: list[str]) -> tuple[int, str, str | None]:
    """Run the CLI in-process; returns the exit code, stderr and the traceback if one escaped."""
    err, out = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):
            code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    except Exception:
        return -1, err.getvalue(), traceback.format_exc()
    return code, err.getvalue(), None


def test_the_fault_battery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    failures, tracebacks, one_line = [], 0, 0
    for i, (name, make) in enumerate(CASES.items()):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        code, err, trace = attempt(make(folder))
        lines = [line for line in err.splitlines() if line.strip()]
        if trace:
            tracebacks += 1
            failures.append(f"{name}: traceback\n{trace}")
        elif code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err:
            one_line += 1
        else:
            failures.append(f"{name}: exit {code}, stderr {lines}")
    assert not (tmp_path / MARKER).exists(), "a pickled payload ran"
    with capsys.disabled():
        print(f"\nfault battery: {len(CASES)} inputs tried, {one_line} one-line errors, {tracebacks} tracebacks")
    assert len(CASES) >= 40
    assert not failures, "\n".join(failures)
