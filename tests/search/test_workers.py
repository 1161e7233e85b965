"""Several Optuna workers on one PostgreSQL study, as on several machines: no trial lost or duplicated, and the
best policy of the study is the best the workers found. Needs a server: ``.ci/run`` starts one (``.ci/postgres.sh``)
and sets AUTOCOMPRESS_TEST_POSTGRES; without it these tests skip and say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

URL = os.environ.get("AUTOCOMPRESS_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL, reason="set AUTOCOMPRESS_TEST_POSTGRES (source .ci/postgres.sh starts a server) for multi-worker tests"
)
WORKERS, EPISODES = 3, 4


def run_workers(tmp_path: Path, agent: str, exp: str) -> list[subprocess.CompletedProcess[str]]:
    command = [
        sys.executable,
        "-m",
        "autocompress",
        "--quiet",
        "search",
        "--model",
        "digits-cnn",
        "--dataset",
        "digits",
        "--agent",
        agent,
        "--episodes",
        str(EPISODES),
        "--seed",
        "0",
        "--storage",
        str(URL),
        "--exp",
        exp,
        "--threads",
        "1",
    ]
    procs = [
        subprocess.Popen(
            [*command, "--run-dir", str(tmp_path / f"worker{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["tpe", "nsga2"])
def test_workers_share_one_postgresql_study(tmp_path: Path, agent: str) -> None:
    import optuna

    exp = f"workers-{uuid.uuid4().hex[:8]}"
    for done in run_workers(tmp_path, agent, exp):
        assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name=f"{exp}__host__{agent}__s0", storage=URL)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(trials) == WORKERS * EPISODES  # none lost, none left running
    assert sorted(t.number for t in trials) == list(range(WORKERS * EPISODES))  # none duplicated
    rows = sum(len((tmp_path / f"worker{i}" / "progress.csv").read_text().splitlines()) - 1 for i in range(WORKERS))
    assert rows == WORKERS * EPISODES  # each worker logged its own episodes, once
    if agent == "tpe":
        bests = [json.loads((tmp_path / f"worker{i}" / "best_policy.json").read_text()) for i in range(WORKERS)]
        best = max(bests, key=lambda b: b["reward"])
        assert best["reward"] == pytest.approx(study.best_value)
        assert best["policy"] == study.best_trial.user_attrs["policy"]


def test_optuna_dashboard_opens_the_study(tmp_path: Path) -> None:
    import io

    import optuna

    dashboard = pytest.importorskip("optuna_dashboard")
    exp = f"dash-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=exp, storage=URL)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    app = dashboard.wsgi(URL)
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/studies",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200") and exp.encode() in body
