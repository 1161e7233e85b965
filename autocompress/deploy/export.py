"""Export a searched policy as a deployable model that verifies itself.

``export_run`` rebuilds the search's workload from the run folder, applies the chosen policy (channels removed,
BatchNorm repaired, optionally fine-tuned, weights rounded to their bits, activation ranges calibrated), and writes:

- ``policy.json`` — the policy document;
- ``model.pt`` — the compressed weights with what :func:`load_exported` needs to rebuild the module (no pickle);
- ``model.onnx`` — the same network for onnxruntime in float arithmetic on the rounded weights, taking inputs as
  the dataset stores them (uint8 pixels or raw float values; the normalisation is inside the graph, and the report's
  ``input`` says dtype, shape and layout); and
  ``model.int8.onnx`` when every layer is at ≤ 8-bit weights and 8-bit activations (onnxruntime static QDQ
  quantization, the real int8 path); ``head.onnx``/``tail.onnx`` for a split policy;
- ``report.json`` / ``report.md`` — test accuracy measured from the exported ONNX files, the PyTorch/ONNX agreement
  check, storage, predicted device latency and energy under the run's deployment preset, host latency in
  onnxruntime.

Activation fake quantization (the search's simulation) is not written into ``model.onnx`` as QDQ pairs: with its
default graph optimizations onnxruntime rewrites QDQ pairs around float kernels and no longer computes what PyTorch
simulated (measured: logits off by up to 0.12 on digits-cnn, exact with ``session.disable_quant_qdq``). The report
gives the simulated accuracy next to the accuracies the files give.

Verification fails the export (exit 1, files kept for inspection) when the ONNX file's logits disagree with
PyTorch's beyond the tolerance.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.compress.finetune import FinetuneOptions, finetune
from autocompress.compress.layers import build_layer_table
from autocompress.compress.onnx_export import export_onnx, ort_predict, ort_session, quantize_int8, with_raw_input
from autocompress.compress.policy import SPLIT_INPUT, Policy
from autocompress.compress.pruning import ChannelPruner
from autocompress.compress.quantization import ActivationQuantizer
from autocompress.compress.reconstruction import check_mode
from autocompress.compress.split import split_model
from autocompress.compress.techniques import apply_techniques, part_bits
from autocompress.data import DatasetInfo, Normalizer, dataset_info
from autocompress.deploy.manifest import LAYOUTS, InputSpec
from autocompress.deploy.shared_weights import load_store, resolve
from autocompress.env import build_workload
from autocompress.env.deployment import Deployment
from autocompress.errors import AutoCompressError
from autocompress.files import short
from autocompress.hardware.graph import GraphInfo
from autocompress.hardware.measure import ort_latency
from autocompress.models import load_model
from autocompress.plugins import require_trust
from autocompress.runs import atomic_folder, atomic_torch_save, atomic_write_json
from autocompress.search.record import RunRecord, SearchConfig

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
# Logits of the ONNX file and of PyTorch must agree to this absolute tolerance, relative to the logits' scale, on
# at least AGREEMENT of the inputs' top-1 predictions. Fake-quantized activations round at 8 bits, so a value
# that lands on a rounding boundary may round the other way in onnxruntime's float arithmetic: a rare one-step
# difference is expected, a systematic one is a defect.
RELATIVE_TOLERANCE = 1e-3
AGREEMENT = 0.995


@dataclass(frozen=True)
class ExportOptions:
    """What ``autocompress export`` does.

    Args:
        policy: ``best`` (the run's best policy) or ``pareto:K`` (the K-th policy of the Pareto front, by accuracy).
        reconstruct: Least-squares refit of the pruned layers: ``sequential`` (default: inputs from the pruned
            network, layer after layer), ``fast`` (what the search scored) or ``none``.
        finetune_epochs: Epochs of fine-tuning after pruning (0: none); a killed fine-tune resumes from
            its checkpoint (in the staging folder beside ``OUT``) when the same export runs again.
        finetune_lr: Starting learning rate of the fine-tune.
        finetune_schedule: ``cosine``, ``step`` or ``constant``.
        distill: Distil from the unpruned model during the fine-tune.
        device: Where the fine-tune runs: ``auto``, ``cpu`` or ``cuda``.
        test_images: Test images the accuracy is measured on (default: the whole test split).
        data_dir: Dataset folder, when it moved since the search.
        latency_repeats: Repeats of the onnxruntime host latency measurement (median reported).
        trust_code: Export a run whose config names code (``file.py:…``, ``pkg.mod:…``), importing it.
    """

    policy: str = "best"
    reconstruct: str = "sequential"
    finetune_epochs: int = 0
    finetune_lr: float = 0.01
    finetune_schedule: str = "cosine"
    distill: bool = True
    device: str = "auto"
    test_images: int | None = None
    data_dir: str | None = None
    latency_repeats: int = 50
    trust_code: bool = False

    def finetune_options(self) -> FinetuneOptions:
        return FinetuneOptions(
            epochs=self.finetune_epochs,
            lr=self.finetune_lr,
            schedule=self.finetune_schedule,  # type: ignore[arg-type]
            distill=self.distill,
            device=self.device,
        )

    def __post_init__(self) -> None:
        self.finetune_options()  # validates the fine-tune's fields
        check_mode(self.reconstruct)
        if self.test_images is not None and self.test_images < 1:
            raise AutoCompressError(f"test_images >= 1 must hold, but got {self.test_images}.", params=("test_images",))
        if not (self.policy == "best" or self.policy.startswith("pareto:")):
            raise AutoCompressError(
                f"policy must be 'best' or 'pareto:K' with K a number, but got '{self.policy}'.", params=("policy",)
            )


class VerificationError(AutoCompressError):
    """The exported files disagree with PyTorch: they stay where they were written, for inspection."""

    keep_output = True


def export_run(
    run_dir: str | Path, out_dir: str | Path, options: ExportOptions, policy: Policy | None = None
) -> dict[str, Any]:
    """Export the chosen policy of a search run (or ``policy``, checked against the run's model) into ``out_dir``;
    returns the report (also written there).

    The files are written beside ``out_dir`` and swapped in whole (:func:`autocompress.runs.atomic_folder`): a
    kill, a full disk or a second export meanwhile leaves the earlier export as it was, never a mix; a fine-tune's
    checkpoint survives a kill and is resumed by the same command.
    """
    with atomic_folder(Path(out_dir), keep_on_retry=("finetune",)) as staging:
        report = write_export(run_dir, staging, options, policy=policy)
    return report


def write_export(
    run_dir: str | Path,
    out_dir: str | Path,
    options: ExportOptions,
    model: nn.Module | None = None,
    fold_batchnorm: bool = True,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """Write the export of a run's policy into the folder ``out_dir`` as it is (:func:`export_run` does so into a
    staging folder); returns the report (also written there).

    Args:
        run_dir: The search's run folder.
        out_dir: Where the files go.
        options: What to export and how.
        model: The pruned model of the policy, when the caller made it (an adaptive package's nested
            configurations are slices of one shared model); default: the policy applied to the run's model and
            refitted by ``options.reconstruct``.
        fold_batchnorm: Fold BatchNorm into the ONNX files' convolution weights (see
            :func:`~autocompress.compress.onnx_export.export_onnx`).
        policy: A policy to export in place of ``options.policy`` (an adaptive package's ladder configurations,
            derived from the run's; checked against the run's model).
    """
    record = RunRecord.open(run_dir, "export", options.trust_code)
    run, config, resolved = record.folder, record.config, record.resolved
    if policy is None:
        entry = record.select(options.policy)
        policy = Policy.from_dict(entry["policy"], f"policy of '{run}'")
    else:
        entry = {"accuracy": None, "policy": policy.to_dict()}
    if policy.model != config.model:
        raise AutoCompressError(
            f"the exported policy must be for the run's model '{config.model}', but it names '{policy.model[:80]}'; "
            f"the run's {options.policy} entry was edited or comes from another run."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workload = build_workload(
        config.model,
        config.dataset,
        config.pretrained,
        config.weights,
        options.data_dir or config.data_dir,
        config.val_images,
        protect_first_last=resolved.space.protect_first_last,
    )
    evaluator, splits = workload.evaluator, workload.splits
    policy.check_names(evaluator.table)  # a layer the model lacks would be ignored, silently
    policy.save(out / "policy.json")

    if model is None:
        model = evaluator.pruned_copy(policy, options.reconstruct)
    wbits = {layer.name: policy.setting(layer.name).wbits for layer in evaluator.table.layers}
    wbits = part_bits(model, wbits, weights=True)
    tuned = finetune(model, splits, options.finetune_options(), evaluator.model, wbits, out / "finetune")
    model.eval()
    acts = evaluator.quantize(model, policy)
    kept = policy.kept_channels(evaluator.table)
    _save_model(out / "model.pt", model, acts, policy, kept, config)

    macs = policy.macs(evaluator.table)
    count = len(splits.test_y) if options.test_images is None else min(options.test_images, len(splits.test_y))
    normalise = Normalizer(splits.info)
    raw, labels = splits.test_x[:count], splits.test_y[:count]
    shape = splits.info.input_shape
    report: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "run": str(run),
        "policy_choice": options.policy if entry["accuracy"] is not None else "given",
        "model": config.model,
        "dataset": config.dataset,
        "test_images": count,
        "input": input_spec(splits.info).__dict__ | {"shape": list(shape)},
        "search_val_accuracy": entry["accuracy"],
        "search_val_accuracy_se": entry.get("accuracy_se"),
        "search_val_images": entry.get("scored_images"),
        "reconstruct": options.reconstruct,
        "finetune_epochs": options.finetune_epochs,
        "finetune_losses": tuned.losses,
        "finetune": tuned.to_dict(),
        "macs": macs,
        "macs_ratio": macs / evaluator.table.macs,
        "params": sum(p.numel() for p in model.parameters()),
    }
    plain = with_raw_input(_without_hooks(model), normalise)
    with torch.inference_mode():
        simulated = torch.cat([model(normalise(raw[i : i + 500])) for i in range(0, count, 500)])
        torch_logits = torch.cat([plain(raw[i : i + 500]) for i in range(0, count, 500)])
    report["test_accuracy_simulated"] = _accuracy(simulated, labels)
    report["files"] = _export_files(out, _without_hooks(model), normalise, policy, evaluator, raw.dtype, fold_batchnorm)
    session = ort_session(out / "model.onnx")
    onnx_logits = ort_predict(session, raw)
    report["test_accuracy"] = _accuracy(onnx_logits, labels)
    report["verification"] = verify(torch_logits, onnx_logits)
    report["host_latency_ms"] = {"onnx_fp32": ort_latency(session, shape, repeats=options.latency_repeats).median_ms}
    if (out / "model.int8.onnx").exists():
        int8 = ort_session(out / "model.int8.onnx")
        report["test_accuracy_int8"] = _accuracy(ort_predict(int8, raw), labels)
        report["host_latency_ms"]["onnx_int8"] = ort_latency(int8, shape, repeats=options.latency_repeats).median_ms
    if policy.split not in (None, SPLIT_INPUT):
        report["verification"]["split"] = _verify_split(out, raw[:256], torch_logits[:256])
        report["verification"]["passed"] &= report["verification"]["split"]["passed"]
    report["device"] = predicted_costs(resolved.deployment, workload.graph, evaluator, policy)
    report["adapt"] = policy.adapt
    atomic_write_json(out / "report.json", report)
    (out / "report.md").write_text(render_report(report))
    if not report["verification"]["passed"]:
        raise VerificationError(
            f"the exported ONNX model must match PyTorch (top-1 agreement >= {AGREEMENT}, logits within "
            f"{RELATIVE_TOLERANCE} of their scale), but got {report['verification']}; files kept in '{out}' "
            "for inspection (an earlier export in --out is left as it was)."
        )
    return report


def input_spec(info: DatasetInfo) -> InputSpec:
    """What the exported files take: the dataset's inputs as it stores them (normalised inside the graph)."""
    note = "scikit-learn's load_digits() images (0..16) × 255/16, rounded to uint8" if info.ref == "digits" else ""
    return InputSpec(
        dtype=info.dtype,
        shape=tuple(info.input_shape),
        layout=LAYOUTS[len(info.input_shape)],
        scale=info.scale,
        mean=tuple(info.mean) if info.mean else None,
        std=tuple(info.std) if info.std else None,
        note=note,
    )


def _export_files(
    out: Path,
    plain: nn.Module,
    normalise: Normalizer,
    policy: Policy,
    evaluator: Any,
    dtype: torch.dtype,
    fold_batchnorm: bool,
) -> list[str]:
    """model.onnx (float arithmetic on the rounded weights), model.int8.onnx where every layer is int8-ready, and
    head/tail files for a split policy; the whole model and the head take raw inputs (``dtype``)."""
    files = ["policy.json", "model.pt", "model.onnx"]
    shape = evaluator.info.input_shape
    export_onnx(with_raw_input(plain, normalise), shape, out / "model.onnx", fold_batchnorm, dtype)
    settings = [policy.setting(layer.name) for layer in evaluator.table.layers]
    if all(s.wbits <= 8 and s.abits == 8 for s in settings):
        # Weights already lie on their (<= 8-bit) grids; onnxruntime re-quantizes them per channel at 8 bits and
        # calibrates the activations on the same training batches the search calibrated on.
        quantize_int8(out / "model.onnx", out / "model.int8.onnx", evaluator.raw_calibration_batches)
        files.append("model.int8.onnx")
    if policy.split not in (None, SPLIT_INPUT):
        head, tail = split_model(plain, str(policy.split))
        export_onnx(with_raw_input(head, normalise), shape, out / "head.onnx", fold_batchnorm, dtype)
        with torch.inference_mode():
            crossing = head(torch.zeros(1, *shape))
        export_onnx(tail, tuple(crossing.shape[1:]), out / "tail.onnx", fold_batchnorm)
        files += ["head.onnx", "tail.onnx"]
    return [*files, "report.json", "report.md"]


def _without_hooks(model: nn.Module) -> nn.Module:
    plain = copy.deepcopy(model)
    for module in plain.modules():
        module._forward_pre_hooks.clear()
    return plain


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def verify(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """Compare two sets of logits: top-1 agreement and absolute differences relative to the logits' scale."""
    diff = (reference - candidate).abs()
    scale = float(reference.abs().max().clamp_min(1.0))
    within = (diff <= RELATIVE_TOLERANCE * scale).all(1).float().mean()
    agreement = float((reference.argmax(1) == candidate.argmax(1)).float().mean())
    return {
        "top1_agreement": agreement,
        "within_tolerance": float(within),
        "max_abs_diff": float(diff.max()),
        "median_abs_diff": float(diff.median()),
        "tolerance": RELATIVE_TOLERANCE * scale,
        "passed": agreement >= AGREEMENT and float(within) >= AGREEMENT,
    }


def _verify_split(out: Path, inputs: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """tail(head(x)) run in onnxruntime against the PyTorch logits of the whole model."""
    head, tail = ort_session(out / "head.onnx"), ort_session(out / "tail.onnx")
    crossing = ort_predict(head, inputs)
    return verify(reference, ort_predict(tail, crossing))


def predicted_costs(deployment: Deployment, graph: GraphInfo, evaluator: Any, policy: Policy) -> dict[str, Any]:
    """Latency, energy, storage and fit predicted by the cost model under the run's deployment (nominal link
    bandwidth), adaptation not counted (it runs when drift is detected, not per inference)."""
    cost = deployment.cost_model(evaluator.table, graph)
    link = deployment.link
    names = {"env": deployment.preset.name, "device": deployment.device.name, "link": link.name if link else None}
    return names | cost.predict_policy(policy).to_dict()


def _save_model(
    path: Path,
    model: nn.Module,
    acts: ActivationQuantizer | None,
    policy: Policy,
    kept: dict[int, int],
    config: SearchConfig,
) -> None:
    atomic_torch_save(
        path,
        {
            "format": FORMAT_VERSION,
            "model": config.model,
            "dataset": config.dataset,
            "policy": policy.to_json(),
            "kept": {str(k): v for k, v in kept.items()},
            "state_dict": model.state_dict(),
            "activation_bits": acts.bits if acts else {},
            "activation_ranges": {k: list(v) for k, v in acts.ranges.items()} if acts else {},
        },
    )


def load_exported(path: str | Path, trust_code: bool = False) -> nn.Module:
    """Rebuild the compressed PyTorch module from an export's ``model.pt`` (weights only, no unpickling); a file
    whose model or dataset names code (``file.py:…``, ``pkg.mod:…``) is refused unless ``trust_code``.

    The architecture is built without weights, pruned to the saved channel counts (which channels go does not
    matter: every weight is then replaced) and loaded; activation quantization hooks are re-attached with the
    calibrated ranges.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"  # an export folder (or a package's configuration) names its model.pt
    if not path.is_file():
        raise AutoCompressError(
            f"an exported model.pt (or the export folder holding it) must exist, but '{path}' does not; write one "
            "with autocompress export RUN --out DIR."
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a damaged or foreign file
        raise AutoCompressError(
            f"'{path}' must be a model.pt written by autocompress export (loaded weights-only: no code runs), but it "
            f"cannot be read ({type(exc).__name__}); export it again."
        ) from None
    needed = ("format", "model", "dataset", "kept", "state_dict", "activation_bits")
    if not isinstance(saved, dict) or any(key not in saved for key in needed):
        raise AutoCompressError(
            f"'{path}' must hold an autocompress export ({', '.join(needed)}), but it does not; export it again."
        )
    if saved.get("format") != FORMAT_VERSION:
        raise AutoCompressError(
            f"model.pt format {FORMAT_VERSION} is needed, but '{path}' holds {short(saved.get('format'))}."
        )
    require_trust([saved.get("model"), saved.get("dataset")], f"'{path}'", trust_code)
    info = dataset_info(saved["dataset"])
    base = load_model(saved["model"], info.num_classes, info.input_shape, saved["dataset"])
    table = build_layer_table(base, info.input_shape, protect=set())
    kept = {int(k): int(v) for k, v in saved["kept"].items()}
    model = ChannelPruner(base, table).prune(kept)
    if saved.get("policy"):  # the techniques' structure (weights follow from the state dict)
        policy = Policy.from_dict(json.loads(saved["policy"]), f"the policy in '{path}'")
        apply_techniques(model, table, policy.technique_values(table))
    if saved.get("shared"):  # a configuration of a shared-weight adaptive package: the rest is in its store
        _fill_state_dict(saved["state_dict"], saved["shared"], load_store(Path(path).parent / "../.."))
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise AutoCompressError(
            f"'{path}' must hold the weights of its pruned {saved['model']}, but they do not fit "
            f"({str(exc).splitlines()[0][:120]}); export it again."
        ) from None
    if saved["activation_bits"]:
        acts = ActivationQuantizer(model, saved["activation_bits"])
        acts.ranges = {k: (float(v[0]), float(v[1])) for k, v in saved["activation_ranges"].items()}
    return model.eval()


def _fill_state_dict(state: dict[str, Any], refs: dict[str, dict[str, Any]], store: dict[str, np.ndarray]) -> None:
    """Put the shared tensors a ``model.pt`` refers to back into its state dict (as torch tensors)."""
    for name, ref in refs.items():
        if ref["tensor"] not in store:
            raise AutoCompressError(
                f"the shared store (shared.npz of the package) must hold '{ref['tensor']}', but it does not or is "
                "missing; a configuration's model.pt works only inside its package."
            )
        state[name] = torch.from_numpy(np.ascontiguousarray(resolve(store, ref)))


def render_report(report: dict[str, Any]) -> str:
    """report.md: the figures a user checks before shipping the model."""
    device, check = report["device"], report["verification"]
    lat = report["host_latency_ms"]
    rows = [
        ("test accuracy (model.onnx, onnxruntime)", f"{report['test_accuracy']:.4f} on {report['test_images']} images"),
        ("test accuracy simulated in PyTorch (activation fake-quant)", f"{report['test_accuracy_simulated']:.4f}"),
        ("validation accuracy of the search (± standard error, images)", _val_accuracy(report)),
        ("fine-tune epochs", str(report["finetune_epochs"])),
        ("MACs (ratio of the original)", f"{report['macs'] / 1e6:.2f} M ({report['macs_ratio']:.3f})"),
        ("parameters", f"{report['params']:,}"),
        ("storage at the policy's bits", f"{device['storage_bytes']:,} bytes"),
        (f"predicted latency on {device['device']}", f"{device['latency_ms']:.3f} ms"),
        (f"predicted energy on {device['device']}", f"{device['energy_mj']:.3f} mJ"),
        ("fits RAM and flash", str(device["fits"])),
        ("host latency, onnxruntime fp32 (batch 1, median)", f"{lat['onnx_fp32']:.3f} ms"),
    ]
    if "test_accuracy_int8" in report:
        rows.append(("test accuracy (model.int8.onnx)", f"{report['test_accuracy_int8']:.4f}"))
        rows.append(("host latency, onnxruntime int8 (batch 1, median)", f"{lat['onnx_int8']:.3f} ms"))
    rows.append(("adaptation at run time", report["adapt"]))
    verdict = "passed" if check["passed"] else "FAILED"
    rows.append(
        (
            "verification (ONNX vs PyTorch)",
            f"{verdict}: top-1 agreement {check['top1_agreement']:.4f}, "
            f"max abs logit difference {check['max_abs_diff']:.2e}",
        )
    )
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        f"# Export of {report['model']} ({report['policy_choice']} policy)\n\n_{stamp}"
        + (f" · run `{report['run']}`" if "run" in report else "")
        + "_\n\n"
        f"| | |\n|---|---|\n{table}\n\nFiles: {', '.join(f'`{f}`' for f in report['files'])}\n"
    )


def _val_accuracy(report: dict[str, Any]) -> str:
    se, images = report.get("search_val_accuracy_se"), report.get("search_val_images")
    text = _number(report["search_val_accuracy"])
    return text if se is None or images is None else f"{text} ± {se:.4f} ({images} images)"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
