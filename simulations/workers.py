"""Local worker processes: one per core, each pinned to its core and running one thread.

JAX (XLA), numba and BLAS each start a thread pool per process. Two worker processes on two
cores then run four or more busy threads and slow each other down: a batch of refits took
about 1.6 times as long per worker as alone (measured on this package's 2-core machine with
``benchmarks/power_throughput.py``). Each worker here asks every library for one thread before
importing it, and binds itself to one core, taken in turn.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

#: Environment that makes XLA, numba, OpenMP and BLAS use one thread in a worker.
ONE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each pinned to one core with one thread."""
    context = get_context("spawn")
    counter = context.Value("i", 0)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=start_worker, initargs=(counter,)
    )


def start_worker(counter) -> None:
    """Worker initializer: one thread per library, and the next core in turn."""
    for name, value in ONE_THREAD.items():
        os.environ.setdefault(name, value)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[index % len(cores)]})
