"""Tensor plumbing of the Open Inference Protocol (KServe v2), without HTTP: BYTES input tensors as texts
(JSON data, or the binary tensor data extension that tritonclient sends by default) and FP32 output tensors.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson

from app.errors import InvalidRequest

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


def decode_bytes_tensor(raw: bytes, field: str) -> list[str]:
    """Elements of a binary BYTES tensor: each a little-endian uint32 length, then that many UTF-8 bytes."""
    texts: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidRequest("binary BYTES data ends inside an element's length", field)
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidRequest("binary BYTES data ends inside an element", field)
        try:
            texts.append(raw[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequest(f"element {len(texts)} is not UTF-8 text", field) from None
        offset += size
    return texts


def inline_binary_inputs(body: bytes, header_length: str | None) -> bytes:
    """A request body in plain JSON: with the binary tensor data extension (`header_length`: the
    Inference-Header-Content-Length header), the JSON header followed by each input's `binary_data_size`
    bytes in input order, becomes the same request with those inputs' elements in `data`."""
    if header_length is None:
        return body
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise InvalidRequest(
            f"{header_length!r} is not a length within the body", "Inference-Header-Content-Length"
        )
    try:
        request = orjson.loads(body[:size])
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON ({exc})", "body") from None
    raw = body[size:]
    offset = 0
    inputs = request.get("inputs") if isinstance(request, dict) else None
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        field = f"inputs.{i}.parameters.binary_data_size"
        length = parameters.pop("binary_data_size")
        if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= len(raw) - offset:
            raise InvalidRequest(f"{length!r} bytes are not in the body", field)
        if tensor.get("datatype") != "BYTES":
            raise InvalidRequest("only BYTES inputs are accepted", f"inputs.{i}.datatype")
        tensor["data"] = decode_bytes_tensor(raw[offset : offset + length], f"inputs.{i}")
        offset += length
    if offset != len(raw):
        raise InvalidRequest(f"{len(raw) - offset} bytes after the tensors' binary data", "body")
    return orjson.dumps(request)


def flat_texts(data: list[Any], shape: list[int], field: str) -> list[str]:
    """The elements of a BYTES tensor's `data` (flat or nested row-major), checked against its shape."""
    texts: list[str] = []
    stack: list[Any] = [data]
    while stack:  # depth-first, left to right: row-major order
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidRequest(f"element {len(texts)} is not a string", f"{field}.data")
    if any(d < 0 for d in shape) or math.prod(shape) != len(texts):
        raise InvalidRequest(
            f"shape {shape} does not hold the {len(texts)} elements of data", f"{field}.shape"
        )
    return texts
