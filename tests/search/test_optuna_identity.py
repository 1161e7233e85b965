"""Optuna workers in one study know their own trials by the run's unique id (not its folder's name), and a trial a
kill left running after its episode was logged is settled with the logged result on resume, never left FAIL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna

from autocompress.search import SearchConfig, SearchJob
from autocompress.search.record import RunRecord


def _config(storage: str, episodes: int = 2) -> SearchConfig:
    return SearchConfig(
        model="digits-cnn", dataset="digits", agent="tpe", space="prune", episodes=episodes, storage=storage
    )


def _study(storage: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_workers_with_equal_folder_names_keep_apart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    SearchJob.create(_config(storage), tmp_path / "a" / "w").run()
    second = SearchJob.create(_config(storage, episodes=3), tmp_path / "b" / "w")
    ids = {RunRecord.open(tmp_path / f / "w").run_id for f in "ab"}
    assert len(ids) == 2, "two runs must never share an id"
    # worker b is mid-trial (as if it were running right now in another process) ...
    study = _study(storage)
    running = study.ask()
    running.set_user_attr("run", RunRecord.open(tmp_path / "b" / "w").run_id)
    running.set_user_attr("episode", 0)
    second.close()
    # ... while worker a resumes: b's running trial is not a's to settle
    SearchJob.resume(tmp_path / "a" / "w", episodes=3).run()
    states = {t.number: t.state for t in _study(storage).get_trials(deepcopy=False)}
    assert states[running.number] == optuna.trial.TrialState.RUNNING
    runs = {t.user_attrs.get("run") for t in _study(storage).get_trials(deepcopy=False)}
    assert runs == ids


def test_a_logged_episode_of_a_killed_trial_is_told_not_failed(tmp_path: Path) -> None:
    job = SearchJob.create(SearchConfig(model="digits-cnn", dataset="digits", agent="tpe", episodes=3), tmp_path / "r")
    job.run()
    folder = tmp_path / "r"
    storage = f"sqlite:///{folder / 'optuna.db'}"
    # a kill between logging episode 3 and telling Optuna: the row is there, the trial still RUNNING
    study = _study(storage)
    trial = study.ask()
    trial.set_user_attr("run", RunRecord.open(folder).run_id)
    trial.set_user_attr("episode", 3)
    with (folder / "progress.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    logged = dict(rows[-1], episode="3", reward="0.123")
    with (folder / "progress.csv").open("a", newline="") as handle:
        csv.DictWriter(handle, list(rows[0])).writerow(logged)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"episodes": 5}))

    SearchJob.resume(folder).run()
    trials = _study(storage).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    settled = next(t for t in trials if t.number == trial.number)
    assert settled.state == optuna.trial.TrialState.COMPLETE and settled.value == 0.123
    assert len(RunRecord.open(folder).rows) == 5
