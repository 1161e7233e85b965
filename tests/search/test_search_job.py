"""Search jobs end to end on the bundled digits set: run folders, TensorBoard tags, determinism, resume, baselines."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress.cli import main
from autocompress.search.record import dominates

QUICK = ["--model", "digits-cnn", "--dataset", "digits", "--env", "host", "--threads", "1"]


def search(capsys: pytest.CaptureFixture[str], run_dir: Path, *args: str) -> dict:
    code = main(["-q", "search", *QUICK, "--run-dir", str(run_dir), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def progress(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard_tags(run_dir: Path) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, list[str]] = {}
    for events in run_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for kind, names in acc.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, []).extend(names)
    return tags


def test_ddpg_run_folder_holds_everything(capsys, tmp_path: Path) -> None:
    run = tmp_path / "ddpg"
    summary = search(capsys, run, "--agent", "ddpg", "--episodes", "12", "--space", "prune-quant")
    names = {p.name for p in run.iterdir()}
    expected = {"config.json", "command.txt", "system.json", "progress.csv", "best_policy.json", "pareto.json"}
    assert expected <= names and "summary.json" in names
    assert {"agent.pt", "replay.npz", "agent.json"} <= {p.name for p in (run / "checkpoints").iterdir()}
    rows = progress(run)
    assert [int(r["episode"]) for r in rows] == list(range(12))
    assert summary["episodes"] == 12 and summary["hard_violations"] == 0
    best = json.loads((run / "best_policy.json").read_text())
    assert best["reward"] == max(float(r["reward"]) for r in rows) == summary["best_reward"]
    assert best["macs_ratio"] <= 0.5 + 1e-6  # the host preset's hard budget
    config = json.loads((run / "config.json").read_text())
    assert config["agent"] == "ddpg" and config["resolved"]["agent"]["algorithm"] == "ddpg"
    # the warm-up is a third of a 12-episode search, so 8 episodes trained the critic
    assert any(r["critic_loss"] for r in rows[4:]) and not any(r["critic_loss"] for r in rows[:4])


def test_tensorboard_tags_read_back(capsys, tmp_path: Path) -> None:
    run = tmp_path / "tb"
    search(capsys, run, "--agent", "ddpg", "--episodes", "9", "--space", "prune")
    tags = tensorboard_tags(run)
    scalars = set(tags["scalars"])
    for tag in ("episode_reward", "accuracy", "latency_ms", "energy_mj", "storage_bytes", "best_reward"):
        assert f"charts/{tag}" in scalars, sorted(scalars)
    assert {"charts/exploration_sigma", "losses/critic_loss", "losses/actor_loss"} <= scalars
    assert {"policy/best", "pareto/front"} <= set(tags["images"])
    hparams = [p for p in run.rglob("events.out.tfevents.*")]
    assert any(b"_hparams_/session_start_info" in p.read_bytes() for p in hparams)


@pytest.mark.parametrize(
    "agent", ["ddpg", pytest.param("random", marks=pytest.mark.slow), pytest.param("tpe", marks=pytest.mark.slow)]
)
def test_same_seed_gives_same_best_policy(capsys, tmp_path: Path, agent: str) -> None:
    args = ["--agent", agent, "--episodes", "8", "--seed", "3", "--space", "prune-quant"]
    first = search(capsys, tmp_path / "a", *args)
    second = search(capsys, tmp_path / "b", *args)
    policy_a = json.loads((tmp_path / "a" / "best_policy.json").read_text())
    policy_b = json.loads((tmp_path / "b" / "best_policy.json").read_text())
    assert policy_a == policy_b and first["best_reward"] == second["best_reward"]
    search(capsys, tmp_path / "c", *[a if a != "3" else "4" for a in args])
    rewards = [[r["reward"] for r in progress(tmp_path / name)] for name in "abc"]
    assert rewards[0] == rewards[1] != rewards[2]  # the seed matters, and only the seed


@pytest.mark.parametrize("budget", [0.4, 0.7])
def test_uniform_is_one_episode_that_meets_the_budget(capsys, tmp_path: Path, budget: float) -> None:
    summary = search(capsys, tmp_path / "u", "--agent", "uniform", "--space", "prune", "--budget", f"macs={budget}")
    # host rounds channels to 16, so the largest uniform ratio lands within a rounding step below the budget
    assert summary["episodes"] == 1 and budget - 0.15 < summary["best_macs_ratio"] <= budget + 1e-6


@pytest.mark.slow
def test_nsga2_writes_study_and_non_dominated_front(capsys, tmp_path: Path) -> None:
    run = tmp_path / "nsga2"
    search(capsys, run, "--agent", "nsga2", "--episodes", "10", "--space", "prune-quant")
    front = json.loads((run / "pareto.json").read_text())
    assert front and all(not dominates(a, b) for a in front for b in front)
    import optuna

    study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'optuna.db'}")
    assert len(study.trials) == 10 and len(study.directions) == 4
    # resuming with a larger budget continues the same study
    config = json.loads((run / "config.json").read_text())
    config["episodes"] = 13
    (run / "config.json").write_text(json.dumps(config))
    code = main(["-q", "search", "--resume", str(run)])
    capsys.readouterr()
    assert code == 0 and len(progress(run)) == 13
    assert len(optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'optuna.db'}").trials) == 13


def test_ppo_runs(capsys, tmp_path: Path) -> None:
    summary = search(capsys, tmp_path / "ppo", "--agent", "ppo", "--episodes", "10", "--space", "prune")
    rows = progress(tmp_path / "ppo")
    assert summary["episodes"] == 10 and any(r["policy_loss"] for r in rows)


@pytest.mark.slow
def test_parallel_workers_log_exactly_the_budget_and_repeat_with_the_seed(capsys, tmp_path: Path) -> None:
    """--workers 2: two environments in subprocesses; an odd budget still logs exactly its episodes, in order, and
    the same seed gives the same episodes."""
    args = ["--agent", "ddpg", "--episodes", "7", "--seed", "3", "--space", "prune-quant", "--workers", "2"]
    first = search(capsys, tmp_path / "a", *args)
    search(capsys, tmp_path / "b", *args)
    rows = progress(tmp_path / "a")
    assert first["episodes"] == 7 and [int(r["episode"]) for r in rows] == list(range(7))
    assert [r["reward"] for r in rows] == [r["reward"] for r in progress(tmp_path / "b")]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["workers"] == 2
    # sigma decays on one schedule shared by both workers (SB3's own wrapping would keep the logged σ constant)
    sigmas = [float(r["exploration_sigma"]) for r in rows]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[-1] < sigmas[0]


def test_workers_are_refused_where_they_cannot_apply(capsys, tmp_path: Path) -> None:
    code = main(["-q", "search", *QUICK, "--agent", "tpe", "--workers", "2", "--run-dir", str(tmp_path / "t")])
    assert code == 1 and "--workers > 1 needs an --agent" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    search(capsys, tmp_path / "r", "--agent", "random", "--episodes", "2")
    code = main(["-q", "search", "--resume", str(tmp_path / "r"), "--workers", "2"])
    assert code == 1 and "keeps its --workers (1" in capsys.readouterr().err


def _kill_when(
    proc: subprocess.Popen[bytes], run: Path, episodes: int, sig: int = signal.SIGKILL, group: bool = False
) -> set[int]:
    """Send ``sig`` once ``episodes`` are logged; returns the processes that were running below the search."""
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (run / "progress.csv").exists() and len(progress(run)) >= episodes:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    below = _descendants(proc.pid)
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    proc.wait()
    return below


@pytest.mark.slow
@pytest.mark.parametrize(("agent", "workers"), [("ddpg", 1), ("ppo", 1), ("tpe", 1), ("ddpg", 2), ("ppo", 2)])
def test_resume_after_kill_loses_no_episode(tmp_path: Path, agent: str, workers: int) -> None:
    """kill -9 at a random moment of a search (with one or two workers), then ``--resume``: every episode is logged
    exactly once, and no worker process outlives the killed search."""
    import random

    run = tmp_path / "killed"
    env = dict(os.environ, AUTOCOMPRESS_RUNS_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "autocompress", "-q", "search", *QUICK, "--agent", agent, "--episodes", "40"]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen([*cmd, "--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers_seen = _kill_when(proc, run, random.Random(f"{agent}{workers}").randint(5, 30))
    if workers > 1:  # the worker processes and the forkserver that started them were there...
        assert len(workers_seen) >= workers + 1, workers_seen
    _assert_gone(workers_seen)  # ...and end with the search that started them
    killed_at = len(progress(run))
    assert 5 <= killed_at < 40
    done = subprocess.run(
        [sys.executable, "-m", "autocompress", "-q", "search", "--resume", str(run)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert [int(r["episode"]) for r in progress(run)] == list(range(40))
    assert json.loads(done.stdout)["episodes"] == 40
    if agent != "tpe":
        state = json.loads((run / "checkpoints" / "agent.json").read_text())
        steps = json.loads((run / "config.json").read_text())["resolved"]["steps_per_episode"]
        # with N workers, the batch that logs the 40th episode may play up to N - 1 more that are not logged
        assert state["episodes"] == 40 and 40 * steps <= state["num_timesteps"] <= (40 + workers - 1) * steps


def _descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (its worker processes and the forkserver that started them), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _assert_gone(pids: set[int]) -> None:
    deadline = time.time() + 20
    while (
        alive := {p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}
    ) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive, f"worker processes {sorted(alive)} outlived the killed search"


def _state(pid: int) -> str:
    """A process's state letter; a process that is gone counts as a zombie ("Z")."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _sigint_at_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_prints_one_line_and_leaves_a_resumable_run(tmp_path: Path, workers: int) -> None:
    run = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "autocompress", "-q", "search", *QUICK, "--agent", "ddpg", "--episodes", "30"]
    cmd += ["--workers", str(workers)]
    # Ctrl-C from a terminal: SIGINT at its default (a job started in the background, `cmd &`, inherits it ignored,
    # and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(
        [*cmd, "--run-dir", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
        preexec_fn=_sigint_at_default,
    )
    # the whole process group gets the interrupt, as from a terminal: the workers must stay quiet
    workers_seen = _kill_when(proc, run, 8, signal.SIGINT, group=True)
    _assert_gone(workers_seen)
    err = proc.stderr.read() if proc.stderr else ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and "--resume" in lines[0], err
    done = subprocess.run(
        [sys.executable, "-m", "autocompress", "-q", "search", "--resume", str(run)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [int(r["episode"]) for r in progress(run)] == list(range(30))


@pytest.mark.slow
def test_export_killed_midway_completes_when_run_again(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "export"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "autocompress",
            "-q",
            "search",
            *QUICK,
            "--agent",
            "random",
            "--episodes",
            "3",
            "--run-dir",
            str(run),
        ],
        check=True,
        capture_output=True,
    )
    cmd = [sys.executable, "-m", "autocompress", "-q", "export", str(run), "--out", str(out), "--finetune-epochs", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    checkpoint = tmp_path / ".export.partial" / "finetune" / "finetune.pt"  # built beside --out, swapped in at the end
    while time.time() < deadline and proc.poll() is None and not checkpoint.exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verification"]["passed"] and report["finetune_epochs"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--budget", "macs"], "--budget must be NAME=VALUE"),
        (["--budget", "mac=0.5"], "Did you mean 'macs'"),
        (["--budget", "macs=half"], "--budget macs must be a number"),
        (["--budget", "macs=0.5:maybe"], "may end in :hard or :soft"),
        (["--agent", "ddgp"], "Did you mean 'ddpg'"),
        (["--env", "raspberry-pi4-wifi"], "Did you mean 'raspberry-pi-4-wifi'"),
        (["--space", "prunee"], "Did you mean 'prune'"),
        (["--episodes", "0"], "episodes >= 1 must hold"),
        (["--budget", "macs=0.001"], "infeasible"),
        (["--device", "tpu"], "--device must be auto, cpu or cuda, but got 'tpu'"),
    ],
)
def test_bad_arguments_give_one_line(capsys, tmp_path: Path, args: list[str], pattern: str) -> None:
    code = main(["search", *QUICK, "--run-dir", str(tmp_path / "bad"), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern.lower() in lines[0].lower(), lines[0]
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_resume_and_run_dir_errors(capsys, tmp_path: Path) -> None:
    assert main(["search", "--resume", str(tmp_path / "nope")]) == 1
    assert "--resume needs a run folder holding config.json" in capsys.readouterr().err
    assert main(["search", "--dataset", "digits"]) == 1
    assert "search needs --model and --dataset" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert main(["search", *QUICK, "--run-dir", str(full)]) == 1
    assert "--run-dir must be a new or empty folder" in capsys.readouterr().err
    assert (full / "x").read_text() == "keep me"


def test_workers_share_an_optuna_study_through_storage(capsys, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    for worker in ("w1", "w2"):
        search(capsys, tmp_path / worker, "--agent", "tpe", "--episodes", "4", "--space", "prune", "--storage", storage)
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 8 and summary.study_name == "search__host__tpe__s0"
    assert all(len(progress(tmp_path / w)) == 4 for w in ("w1", "w2"))


@pytest.mark.slow
def test_a_search_writes_nothing_to_the_system_temp_directory(tmp_path: Path) -> None:
    temp = tmp_path / "systemp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {"TMPDIR": str(temp)}
    command = [
        sys.executable,
        "-m",
        "autocompress",
        "search",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--agent",
        "ddpg",
        "--episodes",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(temp.iterdir()) == []  # SB3's logger (SB3-<time>) and torch's compile cache used to land here
