"""Collecting the files a finished job named in ``outputs``.

When a job reaches SUCCEEDED or FAILED the poll tick reads each named file through the
target's adapter and keeps it: in an S3-compatible bucket when one is configured (the
status then names each object as ``s3://bucket/key``), else in Redis up to a byte budget
per job. What could not be kept is said per file, so a status always accounts for every
path the request named:

    {"result.txt": {"location": "redis", "bytes": 12, "sha256": "..."},
     "big.h5": {"error": "big.h5 has 3000000 bytes, more than the limit of 1048576"}}

A manager or bucket that cannot be reached now raises, and the tick tries again later;
a file that is missing or too large is an answer, not an outage.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from adapters.base import Adapter, OutputMissing, OutputReader, OutputTooLarge
from hpcbridge.model import JobRequest

if TYPE_CHECKING:
    from hpcbridge.s3 import Bucket
    from hpcbridge.store import Store

__all__ = ["REDIS", "Collector"]

#: the location of a file kept in Redis (read back with ``hpc-bridge outputs``)
REDIS = "redis"


class Collector:
    """Reads a job's output files and keeps them in the bucket or in Redis."""

    def __init__(self, store: Store, bucket: Bucket | None, *, redis_bytes: int,
                 file_bytes: int) -> None:
        self._store = store
        self._bucket = bucket
        self._redis_bytes = redis_bytes
        self._file_bytes = file_bytes

    def collect(self, adapter: Adapter, job_id: str, native_id: str,
                request: JobRequest) -> dict[str, dict[str, Any]]:
        """Keep every file ``request`` names; return what became of each, by path."""
        results: dict[str, dict[str, Any]] = {}
        if not isinstance(adapter, OutputReader) or not adapter.capabilities.collect_outputs:
            for path in request.outputs:
                results[path] = {"error": "this target cannot read a job's files"}
            return results
        budget = self._redis_bytes
        for path in request.outputs:
            limit = self._file_bytes if self._bucket is not None else budget
            try:
                data = adapter.read_output(native_id, job_id, request, path, limit)
            except OutputTooLarge as exc:
                where = "the bucket's per-file limit" if self._bucket is not None \
                    else "what is left of the job's Redis budget"
                results[path] = {"error": f"{exc} ({where})", "bytes": exc.size}
                continue
            except OutputMissing as exc:
                results[path] = {"error": str(exc)}
                continue
            kept: dict[str, Any] = {"bytes": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()}
            if self._bucket is not None:
                kept["location"] = self._bucket.put(self._bucket.key_for(job_id, path), data)
            else:
                self._store.keep_output(job_id, path, data)
                kept["location"] = REDIS
                budget -= len(data)
            results[path] = kept
        return results

    @staticmethod
    def not_collected(request: JobRequest, why: str) -> dict[str, dict[str, Any]]:
        """Every named file marked as not collected, for ``why``."""
        return {path: {"error": f"not collected: {why}"} for path in request.outputs}
