"""How many extproc processes ``tokenvoy run`` starts, what each is called and where each listens.

One Python process serves ext_proc on one core. With N of them, Envoy spreads the streams over N endpoints
of the extproc cluster (``render/bootstrap.py``), and since a request's router stream and its upstream
attempts may reach different processes, each runs ``--stateless`` (``extproc/carried.py``). Their metrics go
to one directory (prometheus-client's multiprocess mode), so one scrape of the metrics port shows them all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MAX_DEFAULT_WORKERS = 4  # the default stops here: Envoy, ratelimit and the providers need cores too
METRICS_DIR = "extproc-metrics"  # in the run directory: PROMETHEUS_MULTIPROC_DIR of every worker


def default_workers(cpus: int | None = None) -> int:
    """One extproc process per core this process may run on, at most ``MAX_DEFAULT_WORKERS``."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class ExtprocWorker:
    name: str  # the supervisor's child name: "extproc" alone, "extproc 0", "extproc 1"… with several
    listen: str  # unix:/run/dir/extproc.sock, or extproc-<index>.sock with several
    index: int


def extproc_workers(run_dir: Path, count: int) -> list[ExtprocWorker]:
    if count < 1:
        raise ValueError(f"--extproc-workers must be at least 1, not {count}")
    if count == 1:
        return [ExtprocWorker("extproc", f"unix:{run_dir / 'extproc.sock'}", 0)]
    return [ExtprocWorker(f"extproc {i}", f"unix:{run_dir / f'extproc-{i}.sock'}", i) for i in range(count)]


def fresh_metrics_dir(run_dir: Path) -> Path:
    """The workers' shared metrics directory, emptied: a reused run directory must not add old counts."""
    path = run_dir / METRICS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
