"""Reading CTranslate2 `model.bin` files (binary versions 4-6) into torch tensors."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import torch

from finally_cli.errors import CheckpointError

# Type ids of the file format, in CTranslate2's DataType order.
DTYPES = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
VERSIONS = range(4, 7)


def _unpack(stream: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack("<" + fmt, data)[0]


def _string(stream: BinaryIO) -> str:
    # uint16 length that counts a trailing NUL, then the UTF-8 bytes and the NUL.
    length = _unpack(stream, "H")
    data = stream.read(length)
    if len(data) != length:
        raise EOFError
    return data[:-1].decode("utf-8")


def read_ctranslate2(path: Path, prefix: str = "") -> tuple[str, dict[str, torch.Tensor]]:
    """The model spec name and the variables whose names start with `prefix`.

    Layout: uint32 binary version, spec name, uint32 spec revision, uint32 variable count,
    then per variable its name, uint8 rank, uint32 dims, uint8 type id, uint32 byte count and
    the raw little-endian data; then uint32 alias count and (alias, target) name pairs.

    Args:
        path: the `model.bin` file.
        prefix: keep only these variables (others are skipped without being read).

    Returns:
        (spec name, e.g. "WhisperSpec"; name → tensor, aliases resolved).

    Raises:
        CheckpointError: not a readable CTranslate2 file of a supported version.
    """
    variables: dict[str, torch.Tensor] = {}
    try:
        with open(path, "rb") as stream:
            version = _unpack(stream, "I")
            if version not in VERSIONS:
                raise CheckpointError(
                    f"{path}: CTranslate2 binary version {version} is not supported "
                    f"(supported: {VERSIONS.start}-{VERSIONS.stop - 1})"
                )
            spec = _string(stream)
            _unpack(stream, "I")  # spec revision
            for _ in range(_unpack(stream, "I")):
                name = _string(stream)
                shape = [_unpack(stream, "I") for _ in range(_unpack(stream, "B"))]
                type_id, size = _unpack(stream, "B"), _unpack(stream, "I")
                if not name.startswith(prefix):
                    stream.seek(size, 1)
                    continue
                if type_id not in DTYPES:
                    raise CheckpointError(f"{path}: {name} has unknown type id {type_id}")
                data = bytearray(stream.read(size))
                if len(data) != size:
                    raise EOFError
                variables[name] = torch.frombuffer(data, dtype=DTYPES[type_id]).reshape(shape)
            for _ in range(_unpack(stream, "I")):
                alias, target = _string(stream), _string(stream)
                if alias.startswith(prefix) and target in variables:
                    variables[alias] = variables[target]
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from err
    except (EOFError, UnicodeDecodeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or not a CTranslate2 model.bin") from err
    return spec, variables
