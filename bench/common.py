"""Shared helpers of the benchmark scripts: the machine line, raw results, and BENCHMARKS.md sections."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"

# The library's progress lines (a union training's epoch, a fine-tune's) on stderr with the time: tqdm's bars are
# off when stderr is no terminal, so a benchmark run under nohup showed nothing for half an hour at a time.
if not logging.getLogger("autocompress").handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("autocompress").addHandler(_handler)
    logging.getLogger("autocompress").setLevel(logging.INFO)


def machine() -> str:
    """One line naming the machine: cores, threads, torch version, platform."""
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    )


def command() -> str:
    return "python " + " ".join(
        [str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]
    )


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rows_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of dicts that share their keys (the first row's keys are the columns)."""
    return markdown_table(list(rows[0]), [list(r.values()) for r in rows])


def publish(name: str, title: str, body: str, raw: Any, quick: bool) -> None:
    """Print a benchmark's tables; a full run (not ``--quick``) also keeps the raw results and writes the section."""
    print(body)
    if not quick:
        save_raw(name, raw)
        write_section(name, title, body)


ONE_EPISODE = ("uniform", "tp-taylor", "tp-magnitude")  # agents whose search is a single episode


def run_search(folder: Path, config: Any) -> dict[str, Any]:
    """Run a search in ``folder``, continue an interrupted one, or reuse a finished one; returns its summary."""
    from autocompress.search import SearchJob

    done = folder / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if summary["episodes"] >= config.episodes or config.agent in ONE_EPISODE:
            return dict(summary)
    job = SearchJob.resume(folder) if (folder / "config.json").exists() else SearchJob.create(config, str(folder))
    return job.run()


def save_raw(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def section_date(name: str) -> str | None:
    """The date stamped on BENCHMARKS.md's section ``name``, if there is one."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    found = re.search(rf"<!-- bench:{re.escape(name)} -->\n## [^\n]*\n\n_(\d{{4}}-\d\d-\d\d) ", text)
    return found.group(1) if found else None


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md, stamped with date, machine and command."""
    stamp = f"_{time.strftime('%Y-%m-%d')} · {machine()} · `{command()}` · raw results: `bench/results/{name}.json`_"
    block = f"<!-- bench:{name} -->\n## {title}\n\n{stamp}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nEvery table below is written by the script named in its stamp.\n"
    )
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(block.replace("\\", "\\\\"), text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    BENCHMARKS.write_text(text)
