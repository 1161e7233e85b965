"""``autocompress list``: the models, datasets, devices, links and presets this installation knows."""

from __future__ import annotations

import argparse
from typing import Any

from autocompress.cli.output import human_count, print_table

WHAT = ("models", "datasets", "devices", "links", "envs", "agents", "spaces", "algorithms", "traces")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list models, datasets, devices, links, envs, agents, spaces, algorithms or traces")
    p.add_argument("what", help="|".join(WHAT))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from autocompress.errors import unknown_name_error

    listers = {
        "models": _models,
        "datasets": _datasets,
        "devices": _devices,
        "links": _links,
        "envs": _envs,
        "agents": _agents,
        "spaces": _spaces,
        "algorithms": _algorithms,
        "traces": _traces,
    }
    if args.what not in listers:
        raise unknown_name_error("list", args.what, listers)
    listers[args.what]()
    return 0


def _models() -> None:
    from autocompress.compress.layers import build_layer_table
    from autocompress.data import dataset_info
    from autocompress.models import ZOO, build_model
    from autocompress.models.zoo import pretrained_record

    rows = []
    for name, entry in ZOO.items():
        info = dataset_info(entry.default_dataset)
        model = build_model(name, info.num_classes, info.input_shape)
        table = build_layer_table(model, info.input_shape)
        try:
            record = pretrained_record(name, entry.default_dataset)
            pretrained = f"yes ({float(str(record['test_accuracy'])) * 100:.2f} % test)"
        except Exception:
            pretrained = "no"
        rows.append(
            [
                name,
                entry.default_dataset,
                human_count(table.model_params),
                human_count(table.macs),
                len(table.layers),
                pretrained,
                entry.description,
            ]
        )
    print_table(
        "Models",
        ["name", "dataset", "params", "MACs", "prunable layers", "pretrained", "description"],
        rows,
        caption="Also: torchvision:<name> (any torchvision classification model) and package.module:factory.",
    )


def _datasets() -> None:
    from autocompress.data import DATASETS

    rows = [[i.name, i.describe_input(), i.num_classes, i.val_size, i.description] for i in DATASETS.values()]
    rows += [
        [
            "PATH.npz",
            "any",
            "from labels",
            "10 %",
            "x_train, y_train, x_test, y_test; optional x_val, y_val, mean, std, normalized",
        ],
        [
            "FOLDER/",
            "uint8 images",
            "class folders",
            "10 %",
            "train/<class>/*.png and test/<class>/* (optional val/); one image size",
        ],
        [
            "pkg.module:factory",
            "any",
            "from labels",
            "10 %",
            "returns autocompress.data.DatasetSpec(train=(x, y), test=(x, y), …); also file.py:factory",
        ],
    ]
    print_table("Datasets", ["name", "input", "classes", "val split", "source"], rows)
    print(
        "Inputs are uint8 images N×C×H×W, float images N×C×H×W or sequences N×C×L; labels 0..classes-1. Float "
        "data is normalised with its training mean and std unless it brings its own (or says normalized)."
    )


def _devices() -> None:
    from autocompress.hardware.profiles import DEVICES_DIR, load_device, shipped

    rows = []
    for name in shipped(DEVICES_DIR):
        d = load_device(name)
        peaks = ", ".join(f"{k} {v:g}" for k, v in d.peak_gmacs.items())
        rows.append(
            [
                d.name,
                d.kind,
                peaks,
                d.memory_bandwidth_gbps,
                human_count(d.ram_bytes) + "B",
                human_count(d.flash_bytes) + "B",
                d.active_power_w,
                d.description,
            ]
        )
    print_table(
        "Devices",
        ["name", "kind", "peak GMAC/s", "bandwidth GB/s", "RAM", "flash", "active W", "description"],
        rows,
        caption="Sources: comments in autocompress/hardware/devices/*.yaml; pass a path to use your own profile.",
    )


def _links() -> None:
    from autocompress.hardware.profiles import LINKS_DIR, load_link, shipped

    rows = []
    for name in shipped(LINKS_DIR):
        k = load_link(name)
        rows.append(
            [
                k.name,
                k.uplink_mbps,
                k.downlink_mbps,
                k.rtt_ms,
                k.tx_alpha_mw_per_mbps * k.uplink_mbps + k.tx_beta_mw,
                k.tail_ms,
            ]
        )
    print_table("Links", ["name", "up Mbps", "down Mbps", "RTT ms", "TX power mW", "tail ms"], rows)


def _envs() -> None:
    from autocompress.env.presets import load_env_preset, preset_names

    rows = []
    for name in preset_names("envs"):
        e = load_env_preset(name)
        budgets = ", ".join(f"{k} {b.value:g}{'' if b.hard else ' (soft)'}" for k, b in e.budgets.items())
        rows.append([e.name, e.device, e.link or "—", budgets or "—", e.reward.mode, e.description])
    print_table(
        "Deployment environments (--env)",
        ["name", "device", "link", "budgets", "reward", "description"],
        rows,
        caption="Or pass the path of your own YAML; see envs/README.md for the fields.",
    )


def _agents() -> None:
    from autocompress.env.presets import preset_names
    from autocompress.search.agents import load_agent

    rows = []
    for name in preset_names("agents"):
        a = load_agent(name)
        params = ", ".join(f"{k}={v}" for k, v in a.hyperparameters.items())
        rows.append([a.name, a.algorithm, params or "—"])
    print_table(
        "Agents (--agent)",
        ["name", "algorithm", "hyperparameters"],
        rows,
        caption="Or pass the path of your own YAML, or the name of a searcher you registered (list algorithms).",
    )


def _spaces() -> None:
    from autocompress.env.presets import load_space_preset, preset_names

    rows = []
    for name in preset_names("search_spaces"):
        s = load_space_preset(name)
        keep = f"{s.keep.min:g}–{s.keep.max:g}" if s.keep else "—"
        techniques = ", ".join(f"{n} {r.min:g}–{r.max:g}" for n, r in (s.techniques or {}).items()) or "—"
        split, adapt = s.split, ", ".join(s.adapt or ["—"])
        rows.append([s.name, keep, s.wbits or "—", s.abits or "—", techniques, split, adapt, s.description])
    print_table(
        "Search spaces (--space)",
        ["name", "keep", "weight bits", "activation bits", "techniques", "split", "adapt", "description"],
        rows,
        caption="Or pass the path of your own YAML; see search_spaces/README.md for the fields.",
    )


def _algorithms() -> None:
    from autocompress.search.base import searcher_names

    print_table("Search algorithms", ["name"], [[n] for n in searcher_names()])


def _traces() -> None:
    from autocompress.deploy.simulate import TRACES_DIR, load_trace, shipped_traces

    rows = []
    for name in shipped_traces():
        _, steps = load_trace(name)
        comment = next(iter((TRACES_DIR / f"{name}.yaml").read_text().splitlines()), "").lstrip("# ")
        rows.append([name, len(steps), comment])
    print_table("Context traces (autocompress simulate --trace NAME)", ["name", "steps", "what"], rows)
