"""Local worker processes (power engine, SBC): one per core, each on one JAX CPU device, pinned
to its core and running one thread per library.

A spawned worker inherits its parent's environment. Once the parent has imported PyMC's JAX
module, that holds ``XLA_FLAGS`` asking for 100 host devices: the worker's JAX then ran about
400 threads and its batched refits took twice as long as in a single process (64 refits at
n = 8 on 2 workers: 5.4 s before this module's settings, 2.8 s with them; ``batch_2proc`` in
``benchmarks/power_throughput.py``, on this package's 2-core machine). Each worker therefore
drops that flag and asks JAX for one CPU device; it also asks XLA, numba, OpenMP and BLAS for
one thread each (the environment for libraries not yet loaded, threadpoolctl for pools already
loaded) and binds every thread it has to one core, taken in turn, so that workers do not
compete for cores.

The pool is started once per process (``run_in_workers``) and kept until the process ends: one
`cd49d power` command runs a plan, its adaptive rounds and every sensitivity variant in the
same workers, which import the package and compile each model once, instead of starting two
fresh processes for each (about 6 s each to import the package; 19 pools in `make reproduce`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

#: Environment that makes XLA, numba, OpenMP and BLAS use one thread in a worker.
ONE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "JAX_NUM_CPU_DEVICES": "1",
}


#: PyMC's flag for many XLA host devices, which a worker must not inherit.
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each pinned to one core with one thread."""
    context = get_context("spawn")
    counter = context.Value("i", 0)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=start_worker, initargs=(counter,)
    )


#: This process's worker pools by size, started on first use (``shared_pool``).
_POOLS: dict[int, ProcessPoolExecutor] = {}


def shared_pool(workers: int) -> ProcessPoolExecutor:
    """This process's pool of ``workers`` workers, started on first use and kept until exit."""
    if workers not in _POOLS:
        _POOLS[workers] = worker_pool(workers)
    return _POOLS[workers]


def run_in_workers(function: Callable, arguments: list[tuple], workers: int) -> Iterator:
    """``function(*args)`` for each of ``arguments`` in the shared pool of ``workers``
    processes; yields the results as they finish. Leaving early (an error, an interrupt)
    cancels the calls that have not started; a pool whose worker died is not reused."""
    pool = shared_pool(workers)
    futures = [pool.submit(function, *args) for args in arguments]
    try:
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        _POOLS.pop(workers, None)
        raise
    finally:
        for future in futures:
            future.cancel()


def start_worker(counter) -> None:
    """Worker initializer: one thread per library, and the next core in turn."""
    from threadpoolctl import threadpool_limits

    for name, value in ONE_THREAD.items():
        os.environ[name] = value
    os.environ["XLA_FLAGS"] = " ".join([*inherited_xla_flags(), ONE_THREAD["XLA_FLAGS"]])
    threadpool_limits(limits=1)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) > 1:
        pin_every_thread({cores[index % len(cores)]})


def inherited_xla_flags() -> list[str]:
    """The parent's XLA flags without PyMC's request for 100 host devices.

    ``pymc.sampling.jax`` sets ``--xla_force_host_platform_device_count=100`` in the
    environment when imported (for ``pmap`` over chains), and a worker spawned afterwards
    inherits it before its JAX starts: it then ran about 400 threads and its batched refits
    took about twice as long. The batched sampler runs on one device.
    """
    flags = os.environ.get("XLA_FLAGS", "").split()
    return [flag for flag in flags if not flag.startswith(DEVICE_COUNT_FLAG)]


def pin_every_thread(cores: set[int]) -> None:
    """Bind every thread of this process to ``cores`` (``sched_setaffinity(0)`` binds only the
    calling thread; threads that already run keep their own affinity)."""
    tasks = Path("/proc/self/task")
    for task in tasks.iterdir() if tasks.is_dir() else []:
        try:
            os.sched_setaffinity(int(task.name), cores)
        except OSError:  # a thread that ended meanwhile
            continue
    os.sched_setaffinity(0, cores)
