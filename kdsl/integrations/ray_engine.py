"""``kdsl score --engine ray``: a file's chunks scored on Ray actors through Ray Data.

Each actor compiles the spec once (from its text, so no node needs the spec file) and scores the
chunks it is handed with the same ``ChunkScorer`` the local engine uses, so the output, the bad
row messages and the summary are the local engine's. jsonl chunks travel as offsets into the data
file, which each actor reads itself: on a multi-node cluster the file must be on storage every
node sees (the same path). Parquet chunks travel as Arrow record batches.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator

from kdsl.errors import KdslError


class _ChunkActor:
    """Holds one compiled program; scores pickled chunks into pickled results."""

    def __init__(self, text: str, file: str, job):
        import torch

        import kdsl
        from kdsl.tools.scoring import ChunkScorer

        torch.set_num_threads(1)  # one actor a CPU
        self.scorer = ChunkScorer(kdsl.loads(text, file), job)

    def __call__(self, batch: dict) -> dict:
        return {"result": [pickle.dumps(self.scorer.score(pickle.loads(chunk))) for chunk in batch["chunk"]]}


def score_on_ray(program, job, chunks: Iterator, workers: int, finish: Callable, started: Callable,
                 address: str | None = None) -> None:
    """Score ``chunks`` on ``workers`` actors and hand each result to ``finish``, in file order."""
    try:
        import ray
    except ImportError:
        raise KdslError("--engine ray needs Ray: pip install 'kdsl[ray]'") from None
    from dataclasses import replace

    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": workers}
        ray.init(**options, include_dashboard=False, log_to_driver=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come out in the file's order
        context.enable_progress_bars = False
        # Actors open the file by its absolute path; messages keep the name the user gave.
        job = replace(job, read_path=os.path.abspath(job.source))
        ir = program.ir
        items = [{"chunk": pickle.dumps(chunk)} for chunk in chunks]
        if not items:
            return
        dataset = ray.data.from_items(items).map_batches(
            _ChunkActor, fn_constructor_args=(ir.sources[ir.file], ir.file, job),
            batch_size=1, concurrency=max(1, workers), num_cpus=1)
        started()
        for row in dataset.iter_rows():
            finish(pickle.loads(row["result"]))
    finally:
        if started_here:
            ray.shutdown()
