"""TensorBoard event files of scalars, written without TensorFlow.

Keras on JAX should not import TensorFlow (4 s, 400 MB) just to log five numbers an epoch. An
event file is a TFRecord file of `Event` protocol buffers; scalars need only a few of their
fields, encoded here by hand (field numbers from tensorflow/core/util/event.proto, summary.proto
and tensor.proto). TensorFlow's and TensorBoard's readers check the CRCs, so the tests read these
files back with TensorFlow's reader.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

DT_FLOAT = 1  # TensorProto.dtype
DATA_CLASS_SCALAR = 1  # SummaryMetadata.data_class
_COUNTER = itertools.count()


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def scalar_value(tag: str, value: float) -> bytes:
    """Summary.Value {tag, tensor: float scalar, metadata: the scalars plugin}."""
    tensor = varint(1 << 3) + varint(DT_FLOAT) + field(2, b"") + field(5, struct.pack("<f", value))
    metadata = field(1, field(1, b"scalars")) + varint(4 << 3) + varint(DATA_CLASS_SCALAR)
    return field(1, tag.encode()) + field(8, tensor) + field(9, metadata)


def event(step: int, body: bytes) -> bytes:
    """Event {wall_time, step, body}; `body` is an encoded file_version or summary field."""
    return (varint(1 << 3 | 1) + struct.pack("<d", time.time()) + varint(2 << 3) + varint(step)
            + body)


class EventFile:
    """An append-only event file in `folder`, named as TensorFlow names its own."""

    def __init__(self, folder: Path):
        Path(folder).mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_COUNTER)}.v2")
        self.handle = open(Path(folder) / name, "ab")  # noqa: SIM115 (closed by close())
        self.write_record(event(0, field(3, b"brain.Event:2")))

    def write_record(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self.handle.write(length + struct.pack("<I", masked_crc32c(length)) + data
                          + struct.pack("<I", masked_crc32c(data)))

    def scalars(self, step: int, values: dict) -> None:
        """Write {tag: number} at `step` and flush, so TensorBoard shows it live."""
        summary = b"".join(field(1, scalar_value(tag, float(v))) for tag, v in values.items())
        self.write_record(event(step, field(5, summary)))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
