"""Read the history rows of an offline W&B run (`run-*.wandb`) without W&B's servers.

The file is W&B's 7-byte header followed by a LevelDB-style log of protobuf `Record`s in 32 KiB
blocks (7-byte chunk headers: crc32, length, type FULL/FIRST/MIDDLE/LAST). wandb >= 0.2x no
longer ships a Python reader, so the tests carry this small one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _records(raw: bytes):
    pos, pending = HEADER, b""
    while pos + HEADER <= len(raw):
        left_in_block = BLOCK - (pos % BLOCK)
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + HEADER])
        data = raw[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += BLOCK - (pos % BLOCK) if pos % BLOCK else 0
            continue
        if kind == 1:
            yield data
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            yield pending + data
            pending = b""


def history(run_file: str | Path) -> list[dict]:
    """The logged rows (key -> JSON-decoded value), in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for data in _records(Path(run_file).read_bytes()):
        record = pb.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                         for i in record.history.item})
    return rows


def run_history(run_dir: str | Path, job_type: str) -> list[dict]:
    """All rows of `job_type`'s W&B run in a run dir (a resumed run writes one file per
    process, in time order)."""
    run_dir = Path(run_dir)
    run_id = (run_dir / f"wandb-{job_type}.id").read_text().strip()
    files = sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [row for f in files for row in history(f)]
