"""Where an experiment's runs are computed: here, in a local process pool, or on Ray.

Runs are independent trainings from scratch, so they parallelise perfectly. Every executor
trains with `cellclass.training.jobs.train_job` and hands the result back to this
process, which alone writes the results folder (`write_run`): tables stay consistent and a resumed
experiment sees exactly the runs that finished. Seeds and splits depend only on the job, so
every executor gives the same numbers for the same seeds.

- ``local``: one run after another in this process (progress bars per batch).
- ``process``: ``jobs`` worker processes on this machine, CPU threads split between them.
- ``ray``: Ray tasks on a local or remote cluster (``pip install cellclass[ray]``); the
  decoded pixels go to Ray's object store once and every task reads them from there; a task
  whose worker dies is retried.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from cellclass.progress import Observer
from cellclass.training.jobs import job_name, train_job
from cellclass.training.records import write_run

RAY_RETRIES = 3  # times Ray re-runs a task whose worker process died


def run_jobs(jobs: list, settings, data, out, observer: Observer, *, load=None) -> None:
    """Train every job with the settings' executor and write each as soon as it finishes.

    load : the function that loads ``data`` from ``settings``
        (`cellclass.training.experiment.prepare_data`); process workers call it once each to
        read the pixels from the cache instead of receiving copies.
    """
    if not jobs:
        return
    if settings.executor == "process" and settings.jobs > 1:
        _run_in_processes(jobs, settings, data, out, observer, load)
    elif settings.executor == "ray":
        _run_on_ray(jobs, settings, data, out, observer)
    else:
        _run_here(jobs, settings, data, out, observer)


def _run_here(jobs, settings, data, out, observer) -> None:

    for job in jobs:
        result = train_job(job, settings, data, observer)
        observer.run_finished(job.run, write_run(out, job, settings, result, data))


# ---------------------------------------------------------------- process pool
_WORKER_DATA: dict = {}  # per worker process: the experiment's data, loaded once


def _process_job(settings, job, threads: int, load):
    """Worker: load the (already cached) data once per process, train one job."""
    import torch

    torch.set_num_threads(threads)
    if "data" not in _WORKER_DATA:
        _WORKER_DATA["data"] = load(settings, Observer())
    return train_job(job, settings, _WORKER_DATA["data"], Observer())


def _run_in_processes(jobs, settings, data, out, observer, load) -> None:

    workers = min(settings.jobs, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    observer.message(f"training {len(jobs)} runs in {workers} processes, {threads} thread(s) each")
    context = get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_process_job, settings, job, threads, load): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            observer.run_started(job_name(job, settings), 0)
            rows = write_run(out, job, settings, future.result(), data)
            observer.run_finished(job.run, rows)


# ---------------------------------------------------------------- Ray
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(
            "executor=ray needs Ray: pip install 'cellclass[ray]' (or pip install ray)"
        ) from None
    return ray


def _ray_job(settings, job, data):
    """Ray task body: train one job on data taken from the object store."""

    return train_job(job, settings, data, Observer())


def _run_on_ray(jobs, settings, data, out, observer) -> None:

    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if settings.gpus_per_run > gpus:  # the tasks would wait for ever
            raise ValueError(
                f"gpus_per_run={settings.gpus_per_run:g}: the Ray cluster has "
                f"{gpus:g} GPU(s); use 0 or a cluster with GPUs"
            )
        data_ref = ray.put(data)  # decoded pixels shipped once, shared by every task
        remote = ray.remote(
            num_cpus=settings.cpus_per_run,
            num_gpus=settings.gpus_per_run,
            max_retries=RAY_RETRIES,
        )(_ray_job)
        pending = {remote.remote(settings, job, data_ref): job for job in jobs}
        observer.message(f"submitted {len(jobs)} runs to Ray")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            observer.run_started(job_name(job, settings), 0)
            rows = write_run(out, job, settings, ray.get(ready[0]), data)
            observer.run_finished(job.run, rows)
    finally:
        if started_here:
            ray.shutdown()
