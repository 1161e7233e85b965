"""The three edits of an ONNX model a device makes, on its protobuf bytes: add initializers, read initializers, and
turn BatchNormalization nodes into ones that report their batch statistics.

Why not the ``onnx`` package: a device installs numpy and onnxruntime only (README "On the device"); ``onnx``
brings its own protobuf classes and C++ library, and onnxruntime has no API to edit a graph. The protobuf wire
format is stable and these edits need only a handful of fields of ``onnx.proto3`` (ModelProto.graph = 7;
GraphProto.node = 1, initializer = 5, output = 12; NodeProto.output = 2, op_type = 4, attribute = 5;
TensorProto.dims = 1, data_type = 2, float_data = 4, name = 8, raw_data = 9). Everything else passes through
byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from autocompress.errors import AutoCompressError

GRAPH, NODE, INITIALIZER, OUTPUT = 7, 1, 5, 12
FLOAT = 1  # TensorProto.DataType
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
BN_STATS = ("__batch_mean", "__batch_var")  # suffixes of the outputs a statistics model adds per BatchNorm


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise AutoCompressError("an ONNX file of the package must be a valid protobuf, but is cut or corrupt.")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return result, pos


def fields(data: bytes) -> Iterator[tuple[int, int, bytes | int, bytes]]:
    """(field number, wire type, value, the field's raw bytes) of each field of a message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise AutoCompressError("an ONNX file of the package must be a valid protobuf, but is corrupt.")
        if pos > len(data):
            raise AutoCompressError("an ONNX file of the package must be a valid protobuf, but is cut short.")
        yield number, wire, value, data[start:pos]


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _graph(model: bytes) -> bytes:
    return b"".join(bytes(v) for n, w, v, _ in fields(model) if n == GRAPH and w == 2)


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto of a float32 array (raw little-endian data)."""
    data = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(_int_field(1, d) for d in data.shape)
    return dims + _int_field(2, FLOAT) + _field(8, name.encode()) + _field(9, data.tobytes())


def add_initializers(model: bytes, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The model with ``arrays`` appended as initializers (protobuf merges a repeated graph field)."""
    graph = b"".join(_field(INITIALIZER, tensor(name, a)) for name, a in arrays.items())
    return model + _field(GRAPH, graph)


def _tensor_name(tensor_proto: bytes) -> str:
    return next((bytes(v).decode() for n, _, v, _ in fields(tensor_proto) if n == 8 and isinstance(v, bytes)), "")


def replace_initializers(model: bytes, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The model with the initializers called like ``arrays``' keys replaced by them (others pass through)."""
    graph = b"".join(
        raw
        for number, _, value, raw in fields(_graph(model))
        if not (number == INITIALIZER and isinstance(value, bytes) and _tensor_name(value) in arrays)
    )
    rest = b"".join(raw for n, _, _, raw in fields(model) if n != GRAPH)
    return rest + _field(GRAPH, graph + b"".join(_field(INITIALIZER, tensor(k, a)) for k, a in arrays.items()))


def initializers(model: bytes, names: set[str]) -> dict[str, np.ndarray]:
    """The initializers called ``names`` (stored as raw data or float data), as numpy arrays."""
    found: dict[str, np.ndarray] = {}
    for number, _, value, _ in fields(_graph(model)):
        if number != INITIALIZER or not isinstance(value, bytes):
            continue
        dims, dtype, name, raw, floats = [], FLOAT, "", b"", b""
        for n, w, v, _ in fields(value):
            if n == 1 and w == 0:
                dims.append(int(v))
            elif n == 1 and w == 2:  # packed dims
                dims += [*_packed(bytes(v))]
            elif n == 2:
                dtype = int(v)
            elif n == 8:
                name = bytes(v).decode()
            elif n == 9:
                raw = bytes(v)
            elif n == 4 and w == 2:
                floats += bytes(v)
        if name in names:
            kind = DTYPES.get(dtype, np.float32) if raw else np.float32
            found[name] = np.frombuffer(raw or floats, dtype=np.dtype(kind).newbyteorder("<")).reshape(dims).copy()
    return found


def _packed(data: bytes) -> Iterator[int]:
    pos = 0
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        yield value


def _string(value: bytes | int) -> str:
    return bytes(value).decode() if isinstance(value, bytes) else ""


def batchnorm_nodes(model: bytes) -> list[tuple[str, str, str]]:
    """(input, mean initializer, variance initializer) of every BatchNormalization node, in graph order."""
    found = []
    for number, _, value, _ in fields(_graph(model)):
        if number == NODE and isinstance(value, bytes):
            inputs = [_string(v) for n, _, v, _ in fields(value) if n == 1]
            op = next((_string(v) for n, _, v, _ in fields(value) if n == 4), "")
            if op == "BatchNormalization" and len(inputs) == 5:
                found.append((inputs[0], inputs[3], inputs[4]))
    return found


def statistics_model(model: bytes) -> tuple[bytes, list[str]]:
    """The model with every BatchNormalization node in training mode (normalising by the batch's statistics, as
    PyTorch's BatchNorm does in train mode) and its batch mean and variance as extra graph outputs; returns the
    bytes and the output names (two per node, in :func:`batchnorm_nodes` order). One run over a batch gives what
    AdaBN needs, each layer's statistics computed on inputs the layers before it normalised by theirs."""
    graph_out, names = bytearray(), []
    for number, _, value, raw in fields(_graph(model)):
        if number != NODE or not isinstance(value, bytes):
            graph_out += raw
            continue
        op = next((_string(v) for n, _, v, _ in fields(value) if n == 4), "")
        if op != "BatchNormalization":
            graph_out += raw
            continue
        node = bytearray()
        outputs = [_string(v) for n, _, v, _ in fields(value) if n == 2]
        for n, _, v, r in fields(value):
            attribute = _string(next((a for k, _, a, _ in fields(bytes(v)) if k == 1), b"")) if n == 5 else ""
            if n == 2 or attribute in ("training_mode", "momentum"):
                continue  # outputs and mode are set below
            node += r
        stats = [outputs[0] + suffix for suffix in BN_STATS]
        names += stats
        for output in (outputs[0], *stats):
            node += _field(2, output.encode())
        # AttributeProto: name = 1, f = 2, i = 3, type = 20 (FLOAT = 1, INT = 2); momentum 0 makes the "running"
        # outputs the batch's own statistics
        node += _field(5, _field(1, b"training_mode") + _int_field(3, 1) + _int_field(20, 2))
        node += _field(5, _field(1, b"momentum") + b"\x15" + np.float32(0).tobytes() + _int_field(20, 1))
        graph_out += _field(NODE, bytes(node))
    for name in names:  # ValueInfoProto: name = 1, type = 2 (TypeProto.tensor_type = 1, elem_type = 1)
        graph_out += _field(OUTPUT, _field(1, name.encode()) + _field(2, _field(1, _int_field(1, FLOAT))))
    rest = b"".join(raw for n, _, _, raw in fields(model) if n != GRAPH)
    return rest + _field(GRAPH, bytes(graph_out)), names
