"""ONNX export of (pruned) models and a real int8 path: onnxruntime static quantization in QDQ format.

The int8 model is what a device runtime would execute; its accuracy and host latency are measured, not assumed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocompress.data import Normalizer
from autocompress.errors import AutoCompressError

log = logging.getLogger(__name__)
OPSET = 17
INPUT_NAME = "input"


def with_raw_input(model: nn.Module, normalizer: Normalizer) -> nn.Module:
    """A copy of ``model`` that takes inputs as the dataset stores them (uint8 pixels, raw float values): a forward
    pre-hook casts them to float32 and normalises them, so an ONNX export of the copy holds the normalisation
    (Cast, Mul, Sub) inside the graph and any runtime feeds it raw data. A hook, not a wrapping module, keeps the
    parameter names (and so the ONNX initializer names) the model's own, which shared-weight packages rely on."""
    raw = copy.deepcopy(model).eval()
    scale, shift = normalizer.scale.detach().cpu().clone(), normalizer.shift.detach().cpu().clone()

    def normalise(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0].to(torch.float32) * scale - shift, *args[1:])

    raw.register_forward_pre_hook(normalise)
    return raw


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    fold_batchnorm: bool = True,
    input_dtype: torch.dtype = torch.float32,
) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch dimension and inputs of ``input_dtype``; returns the path.

    ``fold_batchnorm=False`` keeps BatchNormalization nodes with their own initializers instead of folding them
    into the convolutions' weights (onnxruntime folds them when it loads the file, so inference costs the same):
    the convolution weights then stay the module's own, which lets configurations share them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = (torch.zeros(1, *input_shape, dtype=input_dtype),)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter is quick and quiet; the dynamo exporter is the fallback where it is gone
            torch.onnx.export(
                model,
                example,
                str(path),
                input_names=[INPUT_NAME],
                output_names=["logits"],
                dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
                training=torch.onnx.TrainingMode.EVAL if fold_batchnorm else torch.onnx.TrainingMode.PRESERVE,
            )
        except Exception as legacy_error:
            log.debug("TorchScript ONNX export failed (%s); trying dynamo", legacy_error)
            try:
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    dynamo=True,
                )
            except Exception as exc:
                raise AutoCompressError(f"the model must be exportable to ONNX, but export failed ({exc}).") from None
    return path


def ort_session(path: str | Path, threads: int | None = None) -> object:
    """An onnxruntime CPU session with ``threads`` intra-op threads (default: torch's thread count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


ORT_TYPES: dict[str, type[np.generic]] = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}


def input_dtype(session: object) -> type[np.generic]:
    """The numpy dtype a session's input takes (uint8 for a raw-pixel model, float32 otherwise)."""
    kind = session.get_inputs()[0].type  # type: ignore[attr-defined]
    return ORT_TYPES.get(kind, np.float32)


def ort_predict(session: object, inputs: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of an onnxruntime session, batch by batch, inputs given in the dtype its input takes."""
    outs = []
    dtype = input_dtype(session)
    for i in range(0, len(inputs), batch_size):
        batch = inputs[i : i + batch_size].numpy().astype(dtype)
        outs.append(torch.from_numpy(session.run(None, {INPUT_NAME: batch})[0]))  # type: ignore[attr-defined]
    return torch.cat(outs)


class _Calibration:
    """onnxruntime CalibrationDataReader over calibration batches, in the dtype the model's input takes (uint8
    stays uint8 for a raw-pixel model, anything else becomes float32)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = iter(
            [{INPUT_NAME: b.numpy() if b.dtype == torch.uint8 else b.numpy().astype(np.float32)} for b in batches]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: list[torch.Tensor]) -> Path:
    """Static int8 quantization (QDQ, per-channel signed weights, unsigned activations) calibrated on batches."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    prepared = out_path.with_suffix(".pre.onnx")
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    prepared.unlink(missing_ok=True)
    return out_path
