"""A search names its best policy after scoring its best candidates again on the whole validation split."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from autocompress.cli import main
from autocompress.search import SearchJob
from tests.search.test_search_job import QUICK, search, tensorboard_tags


@pytest.fixture(scope="module")
def confirmed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A search that scored 40 validation images and confirmed its 4 best on all 180 (its summary as written)."""
    run = tmp_path_factory.mktemp("confirm") / "run"
    args = ["-q", "search", *QUICK, "--run-dir", str(run), "--agent", "random", "--episodes", "16", "--space", "prune"]
    assert main([*args, "--val-images", "40", "--confirm", "4", "--budget", "macs=0.35"]) == 0
    return run, json.loads((run / "summary.json").read_text())


def entries(run: Path, name: str) -> list[dict]:
    value = json.loads((run / name).read_text())
    return value if isinstance(value, list) else [value]


def test_the_best_candidates_are_scored_on_the_whole_split(confirmed_run) -> None:
    run, summary = confirmed_run
    candidates = entries(run, "candidates.json")
    rewards = [c.get("search_reward", c["reward"]) for c in candidates]
    assert rewards == sorted(rewards, reverse=True) and len(candidates) >= 4
    for c in candidates[:4]:
        assert c["scored_images"] == 180 and c["search_images"] == 40
        assert c["accuracy_se"] == pytest.approx(math.sqrt(c["accuracy"] * (1 - c["accuracy"]) / 180))
    assert all("search_accuracy" not in c for c in candidates[4:])
    best = entries(run, "best_policy.json")[0]
    assert best["reward"] == max(c["reward"] for c in candidates[:4])
    assert summary["best_accuracy"] == best["accuracy"] and summary["best_scored_images"] == 180
    assert summary["best_accuracy_se"] == pytest.approx(best["accuracy_se"])
    assert summary["best_search_accuracy"] == best["search_accuracy"]
    assert summary["search_best_episode"] == candidates[0]["episode"]
    for entry in entries(run, "pareto.json"):  # every front entry states its error and its images
        assert entry["scored_images"] in (40, 180) and entry["accuracy_se"] >= 0


def test_a_rescore_on_the_search_slice_gives_the_logged_score_and_on_the_split_the_confirmed_one(
    confirmed_run,
) -> None:
    run, _ = confirmed_run
    job = SearchJob.resume(run)
    try:
        splits, evaluator = job.env.workload.splits, job.env.workload.evaluator
        for c in entries(run, "candidates.json")[:4]:
            again = job.env.rescore(c["policy"], c["context"], evaluator.val_images, evaluator.val_labels)
            assert again == pytest.approx((c["search_accuracy"], c["search_reward"]), abs=1e-9)
            whole = job.env.rescore(c["policy"], c["context"], splits.val_x, splits.val_y)
            assert whole == pytest.approx((c["accuracy"], c["reward"]), abs=1e-9)
    finally:
        job.close()


def test_the_confirmation_is_in_tensorboard_and_in_the_export_report(confirmed_run, tmp_path: Path) -> None:
    run, summary = confirmed_run
    assert "confirm/candidates/text_summary" in tensorboard_tags(run).get("tensors", [])
    out = tmp_path / "export"
    assert main(["-q", "export", str(run), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["search_val_accuracy"] == summary["best_accuracy"]
    assert report["search_val_images"] == 180 and report["search_val_accuracy_se"] == summary["best_accuracy_se"]
    assert f"± {summary['best_accuracy_se']:.4f} (180 images)" in (out / "report.md").read_text()


def test_a_search_of_the_whole_split_keeps_its_scores_and_states_their_error(capsys, tmp_path: Path) -> None:
    summary = search(capsys, tmp_path / "r", "--agent", "random", "--episodes", "6", "--space", "prune")
    best = entries(tmp_path / "r", "best_policy.json")[0]
    assert "search_accuracy" not in best and best["scored_images"] == 180
    assert summary["best_episode"] == summary["search_best_episode"]
    assert summary["best_accuracy_se"] == pytest.approx(math.sqrt(best["accuracy"] * (1 - best["accuracy"]) / 180))


def test_confirm_out_of_range_is_one_line(capsys, tmp_path: Path) -> None:
    code = main(["search", *QUICK, "--run-dir", str(tmp_path / "x"), "--confirm", "99", "--episodes", "2"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "0 <= --confirm <= 32 must hold, but got --confirm=99" in err


def test_a_resumed_run_searches_on_with_the_search_scores_and_confirms_again(tmp_path: Path) -> None:
    run = tmp_path / "r"
    base = ["-q", "search", *QUICK, "--run-dir", str(run), "--agent", "random", "--space", "prune"]
    assert main([*base, "--episodes", "8", "--val-images", "40", "--confirm", "3"]) == 0
    first = entries(run, "best_policy.json")[0]
    assert main(["-q", "search", "--resume", str(run), "--episodes", "14", "--confirm", "5"]) == 0
    rows = list(csv.DictReader((run / "progress.csv").open()))
    assert len(rows) == 14
    running = 0.0
    for row in rows:  # the best-so-far columns are the search's scores before and after the confirmation
        running = max(running, float(row["reward"])) if row["episode"] != "0" else float(row["reward"])
        assert float(row["best_reward"]) == pytest.approx(running)
    candidates = entries(run, "candidates.json")
    assert all(c["scored_images"] == 180 for c in candidates[:5])
    best = entries(run, "best_policy.json")[0]
    assert best["reward"] == max(c["reward"] for c in candidates if c.get("scored_images") == 180)
    assert best["reward"] >= first["reward"]


def test_a_confirmation_cut_short_is_finished_by_the_next_session(confirmed_run, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(confirmed_run[0], run)
    candidates = entries(run, "candidates.json")
    undone = [{k: v for k, v in c.items() if k not in ("accuracy_se", "scored_images")} for c in candidates]
    for c in undone[:4]:  # as if killed before the confirmation wrote anything: the search's scores stand
        c.update(accuracy=c.pop("search_accuracy"), reward=c.pop("search_reward"))
        c.pop("search_images")
    (run / "candidates.json").write_text(json.dumps(undone))
    job = SearchJob.resume(run)
    try:
        summary = job.run()
    finally:
        job.close()
    assert summary["best_scored_images"] == 180
    again, before = entries(run, "candidates.json")[:4], entries(confirmed_run[0], "candidates.json")[:4]
    assert again == before


def test_compare_shows_the_best_accuracy_with_its_error(confirmed_run, capsys) -> None:
    run, summary = confirmed_run
    assert main(["compare", str(run), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["best_accuracy"] == summary["best_accuracy"] and row["accuracy_se"] == summary["best_accuracy_se"]
    assert main(["compare", str(run)]) == 0
    assert "± se" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"a": 1}'])
def test_a_damaged_candidates_file_is_one_line(confirmed_run, tmp_path: Path, capsys, text: str) -> None:
    run = tmp_path / "copy"
    shutil.copytree(confirmed_run[0], run)
    (run / "candidates.json").write_text(text)
    assert main(["compare", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "candidates.json" in err


def test_a_one_shot_agent_is_confirmed_too(tmp_path: Path) -> None:
    # a one-shot agent plays one episode of its budget: its search ends there, and its policy is confirmed
    args = [*QUICK, "--run-dir", str(tmp_path / "r"), "--agent", "tp-taylor", "--space", "prune", "--episodes", "50"]
    assert main(["-q", "search", *args, "--val-images", "40"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["best_scored_images"] == 180
