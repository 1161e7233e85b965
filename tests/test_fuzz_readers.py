"""Property-based fuzzing (Hypothesis) of every reader of a user's file: policies, presets (env, space, agent,
device), traces (YAML and CSV), run-folder files (config.json, progress.csv, best_policy.json, pareto.json), the
package manifest and .npz datasets. Whatever the bytes — random, random JSON/YAML, or a valid file with one value
replaced by anything — a reader returns or raises AutoCompressError with a one-line message; nothing else escapes."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocompress.errors import AutoCompressError

# AUTOCOMPRESS_FUZZ_EXAMPLES=1000 digs deeper (the default keeps the suite fast)
EXAMPLES = settings(
    max_examples=int(os.environ.get("AUTOCOMPRESS_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def one_line(call: Callable[[], Any]) -> None:
    """``call`` returns, or raises AutoCompressError with one line; any other exception fails the property."""
    try:
        call()
    except AutoCompressError as exc:
        assert "\n" not in str(exc), f"a multi-line error: {exc}"
        assert len(str(exc)) < 600, f"an error of {len(str(exc))} characters: {str(exc)[:300]}"


def fresh(folder: Path, name: str) -> Path:
    """A new path per example (some readers cache by path)."""
    path = folder / f"{next(_counter)}-{name}"
    return path


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths_of(value, (*prefix, i))
    return found


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def mutations(doc: Any) -> st.SearchStrategy[Any]:
    """``doc`` with one of its values (at any depth, or the whole) replaced by any JSON value."""
    return st.tuples(st.sampled_from(paths_of(doc)), json_values).map(lambda pv: replaced(doc, *pv))


def file_bytes(doc: Any, dump: Callable[[Any], str]) -> st.SearchStrategy[bytes]:
    """Random bytes, a random document, or a mutation of the valid ``doc``, as a file's bytes."""
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: dump(v).encode()),
        mutations(doc).map(lambda v: dump(v).encode()),
        st.text(max_size=200).map(str.encode),
    )


def dump_json(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


POLICY = {
    "model": "digits-cnn",
    "default": {"keep": 1.0, "wbits": 32, "abits": 32},
    "layers": {"conv2": {"keep": 0.5, "wbits": 8, "abits": 8}},
    "split": None,
    "adapt": "none",
    "round_to": 1,
    "version": 1,
}


@EXAMPLES
@given(data=file_bytes(POLICY, dump_json))
def test_policy_reader(tmp_path: Path, data: bytes) -> None:
    from autocompress.compress.policy import Policy

    path = fresh(tmp_path, "policy.json")
    path.write_bytes(data)
    one_line(lambda: Policy.load(path))


SPACE = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "full.yaml").read_text())
ENV = yaml.safe_load((Path(__file__).parents[1] / "envs" / "raspberry-pi-4-wifi.yaml").read_text())
AGENT = yaml.safe_load((Path(__file__).parents[1] / "agents" / "ddpg.yaml").read_text())


@EXAMPLES
@given(data=file_bytes(SPACE, dump_yaml))
def test_space_preset_reader(tmp_path: Path, data: bytes) -> None:
    from autocompress.env.presets import load_space_preset

    path = fresh(tmp_path, "space.yaml")
    path.write_bytes(data)
    one_line(lambda: load_space_preset(str(path)))


@EXAMPLES
@given(data=file_bytes(ENV, dump_yaml))
def test_env_preset_reader(tmp_path: Path, data: bytes) -> None:
    from autocompress.env.deployment import Deployment

    path = fresh(tmp_path, "env.yaml")
    path.write_bytes(data)
    one_line(lambda: Deployment.from_preset(str(path), None))


@EXAMPLES
@given(data=file_bytes(AGENT, dump_yaml))
def test_agent_preset_reader(tmp_path: Path, data: bytes) -> None:
    from autocompress.search.agents import load_agent
    from autocompress.search.base import make_searcher

    path = fresh(tmp_path, "agent.yaml")
    path.write_bytes(data)
    one_line(lambda: make_searcher(load_agent(str(path))).check())


DEVICE = yaml.safe_load((Path(__file__).parents[1] / "autocompress" / "hardware" / "devices" / "mcu.yaml").read_text())


@EXAMPLES
@given(data=file_bytes(DEVICE, dump_yaml))
def test_device_profile_reader(tmp_path: Path, data: bytes) -> None:
    from autocompress.hardware.profiles import load_device

    path = fresh(tmp_path, "device.yaml")
    path.write_bytes(data)
    one_line(lambda: load_device(str(path)))


TRACE = {"steps": [{"t": 0, "battery": 1.0, "shift": "none"}, {"t": 1, "battery": 0.4, "latency_budget_ms": 5}]}


@EXAMPLES
@given(data=file_bytes(TRACE, dump_yaml))
def test_trace_reader_yaml(tmp_path: Path, data: bytes) -> None:
    from autocompress.deploy.simulate import load_trace

    path = fresh(tmp_path, "trace.yaml")
    path.write_bytes(data)
    one_line(lambda: load_trace(str(path)))


@EXAMPLES
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(st.lists(st.one_of(st.text(max_size=8), st.floats().map(str)), max_size=7), max_size=6).map(
            lambda rows: "\n".join(",".join(r) for r in [["t", "battery", "shift"], *rows]).encode()
        ),
    )
)
def test_trace_reader_csv(tmp_path: Path, data: bytes) -> None:
    from autocompress.deploy.simulate import load_trace

    path = fresh(tmp_path, "trace.csv")
    path.write_bytes(data)
    one_line(lambda: load_trace(str(path)))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished digits run (random, 3 episodes) and its adaptive package, for the run-folder and manifest cases."""
    from autocompress.deploy.adaptive import AdaptiveOptions, export_adaptive
    from autocompress.search import SearchConfig, SearchJob

    root = tmp_path_factory.mktemp("fuzz")
    config = SearchConfig(model="digits-cnn", dataset="digits", agent="random", episodes=3, space="prune-quant")
    SearchJob.create(config, root / "run").run()
    export_adaptive(root / "run", root / "pkg", AdaptiveOptions(configs=2, ladder=()))
    return {"run": root / "run", "pkg": root / "pkg"}


RUN_FILES = ("config.json", "best_policy.json", "pareto.json")


@EXAMPLES
@given(name=st.sampled_from(RUN_FILES), choice=st.integers(0, 3), value=json_values, raw=st.binary(max_size=200))
def test_run_folder_readers(
    made: dict[str, Path], tmp_path: Path, name: str, choice: int, value: Any, raw: bytes
) -> None:
    from autocompress.search.record import RunRecord

    folder = fresh(tmp_path, "run")
    shutil.copytree(made["run"], folder)
    doc = json.loads((folder / name).read_text())
    paths = paths_of(doc)
    if choice == 0:
        (folder / name).write_bytes(raw)
    else:
        (folder / name).write_text(dump_json(replaced(doc, paths[(choice * 7919) % len(paths)], value)))

    def read() -> None:
        record = RunRecord.open(folder, "export")
        _ = record.config, record.resolved, record.select("best"), record.overview()

    one_line(read)


@EXAMPLES
@given(cut=st.integers(0, 4000), junk=st.binary(max_size=80))
def test_progress_log_reader(made: dict[str, Path], tmp_path: Path, cut: int, junk: bytes) -> None:
    from autocompress.search.record import RunRecord

    folder = fresh(tmp_path, "run")
    shutil.copytree(made["run"], folder)
    text = (folder / "progress.csv").read_bytes()
    (folder / "progress.csv").write_bytes(text[:cut] + junk)
    one_line(lambda: RunRecord.open(folder, "export").rows)


MANIFEST_PATHS: list[tuple[Any, ...]] = []


@EXAMPLES
@given(choice=st.integers(0, 10**6), value=json_values, raw=st.booleans(), junk=st.binary(max_size=200))
def test_manifest_reader(
    made: dict[str, Path], tmp_path: Path, choice: int, value: Any, raw: bool, junk: bytes
) -> None:
    from autocompress.deploy.runtime import AdaptiveModel

    folder = fresh(tmp_path, "pkg")
    shutil.copytree(made["pkg"], folder)
    doc = json.loads((folder / "manifest.json").read_text())
    paths = paths_of(doc)
    if raw:
        (folder / "manifest.json").write_bytes(junk)
    else:
        (folder / "manifest.json").write_text(dump_json(replaced(doc, paths[choice % len(paths)], value)))
    one_line(lambda: AdaptiveModel.load(folder))


arrays = st.one_of(
    st.integers(0, 5).map(lambda n: np.zeros((n, 1, 8, 8), np.uint8)),
    st.integers(0, 5).map(lambda n: np.arange(n)),
    st.just(np.array(["a", "b"])),
    st.just(np.full((4, 1, 8, 8), np.nan, np.float32)),
    st.just(np.zeros((4, 8), np.float32)),
    st.just(np.array([-1, 0, 1, 2])),
    st.just(np.array([0.5, 1.5, 2.5, 3.0])),
    st.just(np.zeros((4, 1, 8, 8), np.complex64)),
)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "mean", "std", "normalized")


@EXAMPLES
@given(contents=st.dictionaries(st.sampled_from(NPZ_KEYS), arrays, max_size=9))
def test_npz_dataset_reader(tmp_path: Path, contents: dict[str, np.ndarray]) -> None:
    from autocompress.data import load_dataset

    path = fresh(tmp_path, "data.npz")
    base = {
        "x_train": np.zeros((40, 1, 8, 8), np.uint8),
        "y_train": np.arange(40) % 4,
        "x_test": np.zeros((8, 1, 8, 8), np.uint8),
        "y_test": np.arange(8) % 4,
    }
    np.savez(path, **(base | contents))
    one_line(lambda: load_dataset(str(path)))


@pytest.mark.parametrize("value", [True, 3, "x", [1]])
def test_a_run_whose_resolved_section_is_no_mapping_is_one_line(
    made: dict[str, Path], tmp_path: Path, value: Any
) -> None:
    # found by the property above: `"resolved": true` in config.json raised AttributeError on opening the run
    from autocompress.search.record import RunRecord

    folder = fresh(tmp_path, "run")
    shutil.copytree(made["run"], folder)
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**doc, "resolved": value}))

    def read() -> None:
        record = RunRecord.open(folder, "export")
        _ = record.config, record.resolved

    one_line(read)
