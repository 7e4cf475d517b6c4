"""Read the history rows of an offline W&B run (`run-*.wandb`) without W&B's servers.

The file is W&B's 7-byte header followed by a LevelDB-style log of protobuf `Record`s in 32 KiB
blocks (7-byte chunk headers: crc32, length, type FULL/FIRST/MIDDLE/LAST). wandb >= 0.2x no
longer ships a Python reader, so the tests carry this small one.
"""

from __future__ import annotations

import json
import struct
import time
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


def run_records(run_file: str | Path, wait_s: float = 120.0) -> list:
    """The parsed `Record`s of a finished run's file, waiting up to `wait_s` for its `exit`
    record: `run.finish()` returns before wandb-core has flushed the file's tail (it closes the
    stream after a fire-and-forget `inform_finish`), so on a busy machine a reader that comes at
    once can find the last rows missing."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + wait_s
    while True:
        records = []
        try:
            for data in _records(Path(run_file).read_bytes()):
                record = pb.Record()
                record.ParseFromString(data)
                records.append(record)
        except DecodeError:  # a record cut where the flush has not reached yet
            pass
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in records]
            raise AssertionError(f"{run_file}: no exit record after {wait_s:.0f} s; "
                                 f"records so far: {kinds}")
        time.sleep(0.5)


def history(run_file: str | Path) -> list[dict]:
    """The logged rows (key -> JSON-decoded value), in order."""
    return [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
             for i in record.history.item}
            for record in run_records(run_file)
            if record.WhichOneof("record_type") == "history"]


def run_history(run_dir: str | Path, job_type: str) -> list[dict]:
    """All rows of `job_type`'s W&B run in a run dir (a resumed run writes one file per
    process, in time order)."""
    run_dir = Path(run_dir)
    run_id = (run_dir / f"wandb-{job_type}.id").read_text().strip()
    files = sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [row for f in files for row in history(f)]
