"""The Ray engine: the local engine's raw blocks scored by a pool of Ray actors, each loading the detector once.

The source's chunks (line ranges of a JSONL file, slices of Parquet row groups, of in-memory rows) become a Ray
dataset; a read step streams each chunk into raw blocks with `Source.read`, the code the local engine runs, so row
numbers and bad rows are the same; an actor pool (`ActorPoolStrategy`) scores them with `score_block`; the driver
receives the scored blocks in row order (`preserve_order`) and writes them with the local engine's writers. Reading
and scoring run on the cluster; the driver only writes. Each read task's blocks go to one actor, so the source is
cut into several chunks per actor (a JSONL file is scanned once for line offsets; a .gz file stays one chunk).

On a cluster every node must reach the input (a shared path or an object-store URI) and the detector folder, and
have seawall installed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from seawall.detect.batch import Columns, DetectorSpec, Source, score_block
from seawall.errors import SeawallError

PIECES_PER_WORKER = 4
FAILURE, FAILURE_TYPE = "__failure__", "__failure_type__"


def start_ray(address: str | None = None) -> bool:
    """Connect to the cluster at `address` ("auto" finds a local `ray start`), or start a quiet local Ray on this
    machine's cores; returns False when Ray was already running in this process."""
    try:
        import ray
    except ImportError:
        raise SeawallError("the ray engine needs Ray: pip install 'seawall[scale]'") from None
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    logging.getLogger("ray").setLevel(logging.ERROR)  # before init, which logs its own start-up at INFO
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    except ConnectionError as error:
        raise SeawallError(
            f"cannot connect to a Ray cluster at {address!r} ({error}); start one with `ray start --head`"
        ) from None
    return True


def _failure_block(error: SeawallError) -> pa.Table:
    """A user error as a one-row block: it travels in row order behind the rows read before it, so the driver
    writes those rows and then raises it, as the local engine does (raising in the task would abort the rows in
    flight). Ray may merge it into the block before it (missing columns become nulls): `_split_failure` cuts it
    out again."""
    return pa.table({FAILURE: [str(error)], FAILURE_TYPE: [type(error).__name__]})


def _split_failure(block: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """The rows before the block's first failure row, and that row (None when it has none)."""
    import pyarrow.compute as pc

    if FAILURE not in block.column_names:
        return block, None
    marks = pc.is_valid(block.column(FAILURE)).to_pylist()
    rows = block.drop_columns([FAILURE, FAILURE_TYPE])
    if True not in marks:
        return rows, None
    index = marks.index(True)
    return rows.slice(0, index), block.slice(index, 1).select([FAILURE, FAILURE_TYPE])


def _read_chunks(
    source: Source, batch_size: int, keep_original: bool, chunks: pa.Table
) -> Iterator[pa.Table]:
    for chunk in chunks.column("chunk").to_pylist():
        try:
            yield from source.read(json.loads(chunk), batch_size, keep_original)
        except SeawallError as error:
            yield _failure_block(error)
            return


class BlockScorer:
    """A Ray actor's scoring function: loads the detector once, then scores raw blocks."""

    def __init__(self, spec: DetectorSpec, columns: dict[str, Any], keep_original: bool) -> None:
        self.detector = spec.load()
        self.columns = Columns(**columns)
        self.keep_original = keep_original

    def __call__(self, block: pa.Table) -> pa.Table:
        rows, failure = _split_failure(block)
        try:
            scored = score_block(self.detector, rows, self.columns, self.keep_original)
        except SeawallError as error:
            scored, failure = (
                score_block(self.detector, rows.slice(0, 0), self.columns),
                _failure_block(error),
            )
        return scored if failure is None else pa.concat_tables([scored, failure], promote_options="default")


def _raise_failure(failure: pa.Table) -> None:
    import seawall.errors

    message, name = failure.column(FAILURE)[0].as_py(), failure.column(FAILURE_TYPE)[0].as_py()
    error_type = getattr(seawall.errors, name, SeawallError)
    raise (
        error_type if isinstance(error_type, type) and issubclass(error_type, SeawallError) else SeawallError
    )(message)


def ray_blocks(
    source: Source,
    spec: DetectorSpec,
    columns: Columns,
    batch_size: int = 64,
    keep_original: bool = False,
    address: str | None = None,
    workers: int | None = None,
) -> Iterator[pa.Table]:
    """Scored blocks of `source`, in row order, from an actor pool of `workers` actors (default: one per CPU)."""
    from functools import partial

    start_ray(address)
    import ray
    import ray.data

    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    if workers < 1:
        raise SeawallError(f"--workers must be at least 1, got {workers}")
    # Each read task's blocks go to one actor: several chunks per actor keep the whole pool busy.
    chunks = [
        {"chunk": json.dumps(chunk)} for chunk in source.chunks(PIECES_PER_WORKER * workers, batch_size)
    ]
    workers = min(workers, len(chunks))
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    data_logger.setLevel(logging.CRITICAL)  # a failed task's traceback: the error raised here says it once
    try:
        dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks))
        # Reading takes no CPU slot: with one actor per CPU a reader that needed one would wait forever.
        dataset = dataset.map_batches(
            partial(_read_chunks, source, batch_size, keep_original),
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=0,
        )
        dataset = dataset.map_batches(
            BlockScorer,
            fn_constructor_kwargs={"spec": spec, "columns": asdict(columns), "keep_original": keep_original},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows, failure = _split_failure(block)
            if rows.num_rows:
                yield rows
            if failure is not None:
                _raise_failure(failure)
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        data_logger.setLevel(saved_level)
