"""A run folder is searched by one process at a time; a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autocompress.errors import AutoCompressError
from autocompress.runs import LOCK_FILE, run_lock
from autocompress.search import SearchConfig, SearchJob


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = run_lock(tmp_path, "search")
    with pytest.raises(AutoCompressError, match=rf"in use by process {os.getpid()} .*\(search since"):
        run_lock(tmp_path, "resume")
    first.release()
    run_lock(tmp_path, "resume").release()  # free again
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_killed_holder_leaves_the_folder_free(tmp_path: Path) -> None:
    code = f"from pathlib import Path; from autocompress.runs import run_lock; lock = run_lock(Path({str(tmp_path)!r}), 'search'); print('held', flush=True); import time; time.sleep(60)"  # noqa: E501
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(AutoCompressError, match=f"process {holder.pid} "):
            run_lock(tmp_path, "resume")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    run_lock(tmp_path, "resume").release()  # kill -9 left no stale lock


def test_a_search_holds_its_folder_until_it_ends_and_resume_takes_it_after(tmp_path: Path) -> None:
    config = SearchConfig(
        model="digits-cnn", dataset="digits", env="raspberry-pi-4", space="prune", agent="random", episodes=2, seed=0
    )
    job = SearchJob.create(config, tmp_path / "run")
    with pytest.raises(AutoCompressError, match="in use by process"):
        SearchJob.resume(tmp_path / "run")
    job.run()
    resumed = SearchJob.resume(tmp_path / "run")  # free once the search ended
    resumed.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".run")) == []
