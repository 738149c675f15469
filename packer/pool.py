"""Where the image stage's tasks run: the worker pools and everything about worker processes.

One small interface, `Pool`: start in the background while the parent plans (`Pool(...)`, then
`ready()`), check the workers (`check_workers`), run tasks with their results in submission order
(`map`), say where they run (`describe`), shut down what this run started (`close`). Behind it, a
backend per place to run: `LokyBackend` (joblib's loky processes on this machine) and
`DaskBackend` (a Dask cluster through joblib's dask backend). A third backend is a class here and
an entry in BACKENDS; nothing else changes (the command's --backend choices are read from it).

Every task runs through `in_worker`, which makes the worker exit with its parent and tunes glibc's
malloc for image-sized buffers (undoing a Dask nanny's setting) before the task's own code. This
module imports neither Polars nor the shard code: the tasks it runs are plain functions with plain
arguments.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .config import InputError

if TYPE_CHECKING:
    from joblib import Parallel

# -- in every worker process ----------------------------------------------------------------------
_watching = False
_malloc_tuned = False


def tune_malloc() -> None:
    """In every process that encodes images (each worker, or the parent with one worker): keep
    image-sized buffers in the heap for re-use, instead of mmap'ing and unmapping each.

    Each decoded image, its libdeflate-inflated data and each resize is a buffer of several MB. glibc
    serves those with mmap until its dynamic threshold has grown, and trims the heap's top whenever
    more than twice that is free: every image then page-faults in tens of MB of zeroed memory again.
    Fixing the mmap threshold at 32 MiB and the trim threshold at 64 MiB keeps them: 4-5% of the
    image stage here (the kernel's system time fell from 0.5 s to 0.1 s per 480 images), at most
    64 MiB kept per process. It also undoes what a Dask nanny's MALLOC_TRIM_THRESHOLD_ does (any
    malloc setting turns the dynamic threshold off, so every buffer over 128 KiB was mmap'ed: 25% of
    the image stage, a LocalCluster ran at 0.73x loky before this)."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def exit_with_parent(parent: int | None = None, poll: float = 0.5) -> None:
    """In a pool worker: end this process when the parent dies, `kill -9` included (loky's workers
    would otherwise wait for work forever, and keep its resource trackers alive). The worker's
    parent changes when the parent dies (it is re-parented), so a daemon thread polls for that.
    loky workers run it as they start, with the parent's pid (which may be dead already by the time
    a worker has imported); Dask workers on their first task. Does nothing in the parent itself
    (one worker runs the tasks in-process)."""
    global _watching
    if _watching or multiprocessing.parent_process() is None:
        return
    _watching = True
    parent = parent if parent is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """A task as every worker runs it: the process set up (once), then `fn(*args)`."""
    exit_with_parent()
    tune_malloc()
    return fn(*args)


def _ready() -> int:
    time.sleep(0.02)  # long enough for every worker to take one of these
    return os.getpid()


def _readable(path: str) -> bool:
    """Whether this process can open the file (opened, not os.access: root's access() says yes to
    any file, and a sandbox may refuse what the permissions allow)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False
    os.close(fd)
    return True


def _missing(paths: list[str]) -> list[str]:
    return [p for p in paths if not _readable(p)]


def _unreadable_objects(urls: list[str], options: dict[str, Any]) -> list[str]:
    """Of these s3:// URLs, each this worker cannot read, with the store's reason."""
    from .objects import objects_for

    return objects_for(options).unreadable(urls)


def _build() -> dict[str, str]:
    """What decides the encoded bytes besides the inputs: packer's, Pillow's and PyAV's (FFmpeg's)
    versions. Loads packer's image and video code as a task would (a Pillow whose compiled core
    does not match fails here)."""
    import av
    from PIL import __version__ as pil

    from . import __version__ as packer
    from . import images, video  # noqa: F401

    return {"packer": packer, "Pillow": pil, "av": av.__version__}


# -- the backends ---------------------------------------------------------------------------------
def loky_parallel(workers: int, **options: Any) -> Parallel:
    """joblib on loky's re-usable executor, whose workers start with `exit_with_parent` (the same
    initializer every time, so that the executor the warm-up started is the one re-used)."""
    from joblib import Parallel
    from joblib.parallel import parallel_config

    with parallel_config(backend="loky", initializer=exit_with_parent, initargs=(os.getpid(),)):
        return Parallel(n_jobs=workers, **options)


class LokyBackend:
    """joblib's loky processes on this machine. One worker is the parent itself: the tasks run in
    order in its own thread, with neither joblib nor a process in between, and their results stay
    in memory (`ships_bytes`), where worker processes hand theirs over as files."""

    # loky's executor outlives a run: a process that packs again (the profiler, the tests) re-uses
    # it, and it ends with the process (its workers exit with their parent).
    closes_after_run = False

    def __init__(self, workers: int, scheduler: str | None):
        self.workers = workers
        if workers > 1:
            # joblib (0.2 s with numpy) is imported here, before the parent plans, so that the
            # pool's thread spawns the workers at once instead of importing while Polars plans.
            import joblib  # noqa: F401

    @property
    def ships_bytes(self) -> bool:
        return self.workers == 1

    def start(self) -> None:
        if self.workers > 1:
            from joblib import delayed

            seen: set[int] = set()
            for _ in range(10):
                tasks = (delayed(_ready)() for _ in range(2 * self.workers))
                seen.update(loky_parallel(self.workers)(tasks))
                if len(seen) >= self.workers:
                    break

    def start_failed(self, error: BaseException) -> BaseException:
        return error

    def check_workers(self, paths: list[str], storage: dict[str, Any] | None = None) -> None:
        """loky's workers are this machine's processes, started from this environment."""

    def describe(self) -> str:
        return f"loky, {self.workers} worker(s)"

    def map(self, calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]], pre_dispatch: str) -> Iterator[Any]:
        if self.workers == 1:
            return (fn(*args) for fn, args in calls)
        from joblib import delayed

        parallel = loky_parallel(self.workers, return_as="generator", pre_dispatch=pre_dispatch)
        return parallel(delayed(fn)(*args) for fn, args in calls)

    def close(self) -> None:
        from joblib.externals.loky import reusable_executor

        with reusable_executor._executor_lock:
            executor, reusable_executor._executor = reusable_executor._executor, None
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)
            # Its queues' semaphores are released here (unlinked, and unregistered from loky's
            # resource tracker), not in the interpreter's teardown, where the tracker may see its
            # pipe close first and print a "leaked semlock" warning after the run's one error line.
            del executor
            gc.collect()


class DaskBackend:
    """A Dask cluster (at `scheduler`, or a LocalCluster of `workers` processes) through joblib's
    dask backend. The workers read the images under the same paths as the parent (a shared
    filesystem: checked before the run) and send the encoded samples back in their results, so the
    output folder need not be shared."""

    ships_bytes = True
    closes_after_run = True  # a LocalCluster or a client connection is this run's alone

    def __init__(self, workers: int, scheduler: str | None):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise InputError(
                "--backend dask needs Dask's distributed scheduler: pip install -e '.[dask]' (make install does)"
            ) from None
        self.workers = workers
        self.scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        self.client: Any = None
        self.cluster: Any = None

    def start(self) -> None:
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = Client(self.scheduler, set_as_default=False)
        else:
            self.cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
            self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(1)
        self.workers = sum(self.client.nthreads().values())

    def start_failed(self, error: BaseException) -> BaseException:
        return InputError(f"--scheduler {self.scheduler}: cannot connect: {error}")

    def check_workers(self, paths: list[str], storage: dict[str, Any] | None = None) -> None:
        """Every worker runs the same packer and Pillow as the parent (the JPEG bytes depend on
        them) and can read a sample of the images the parent reads, files under the same paths (a
        shared filesystem) and s3:// objects with `storage` (no shared disk needed); else an
        InputError."""
        mine = _build()
        try:
            builds = self.client.run(_build)
        except Exception as exc:  # a worker whose environment cannot even load packer's image code
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"a dask worker cannot run packer's image code ({first}): start the workers from the same "
                "environment as this machine"
            ) from None
        for worker, theirs in builds.items():
            if theirs != mine:
                raise InputError(
                    f"dask worker {worker} runs {theirs}, this machine {mine}: start the workers from the same "
                    "environment (the encoded bytes depend on it)"
                )
        from .objects import by_location

        local, remote = by_location(paths)
        if local:
            sample = [p for p in local[:: max(1, len(local) // 5)][:5] if _readable(p)]
            for worker, missing in self.client.run(_missing, sample).items():
                if missing:
                    raise InputError(
                        f"dask worker {worker} cannot read {len(missing)} of {len(sample)} sampled images "
                        f"(e.g. {missing[0]}): the workers need the local images under the same paths as this "
                        "machine (a shared filesystem), or the images in a bucket (s3:// paths)"
                    )
        if remote:
            sample = remote[:: max(1, len(remote) // 5)][:5]
            for worker, unreadable in self.client.run(_unreadable_objects, sample, storage or {}).items():
                if unreadable:
                    raise InputError(
                        f"dask worker {worker} cannot read {len(unreadable)} of {len(sample)} sampled objects "
                        f"(e.g. {unreadable[0]}): give the workers credentials (their own AWS chain, or "
                        "--storage-options, which the tasks carry)"
                    )

    def describe(self) -> str:
        where = self.scheduler or f"a local cluster, dashboard {self.cluster.dashboard_link}"
        return f"dask, {self.workers} worker thread(s) at {where}"

    def map(self, calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]], pre_dispatch: str) -> Iterator[Any]:
        from joblib import Parallel, delayed
        from joblib.parallel import parallel_config

        with parallel_config(backend="dask", client=self.client):
            parallel = Parallel(n_jobs=-1, return_as="generator", pre_dispatch=pre_dispatch)
        return parallel(delayed(fn)(*args) for fn, args in calls)

    def close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


BACKENDS: dict[str, type[LokyBackend] | type[DaskBackend]] = {"loky": LokyBackend, "dask": DaskBackend}


# -- the interface ---------------------------------------------------------------------------------
class Pool:
    """Where the image stage runs, started in the background while the parent plans."""

    def __init__(self, backend: str, workers: int, scheduler: str | None = None):
        self.backend = backend
        self.impl = BACKENDS[backend](workers, scheduler)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="start-pool", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self.impl.start()
        except BaseException as exc:  # reported by ready(), in the parent's thread
            self.error = exc

    @property
    def workers(self) -> int:
        return self.impl.workers

    @property
    def ships_bytes(self) -> bool:
        """Whether task results carry their bytes (workers on other machines) rather than files."""
        return self.impl.ships_bytes

    def ready(self) -> None:
        """Wait for the pool to be up (raises what starting it raised)."""
        self._thread.join()
        if self.error is not None:
            raise self.impl.start_failed(self.error) from None

    def check_workers(self, paths: list[str], storage: dict[str, Any] | None = None) -> None:
        self.impl.check_workers(paths, storage)

    def describe(self) -> str:
        return self.impl.describe()

    def map(self, fn: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], pre_dispatch: str) -> Iterator[Any]:
        """`fn(*args)` for each task, run by the workers; results in submission order."""
        return self.impl.map(((in_worker, (fn, *args)) for args in tasks), pre_dispatch)

    def close(self) -> None:
        """Shut down what this run started, so that it exits with nothing but its own output."""
        self._thread.join()
        self.impl.close()

    def finish(self) -> None:
        """At the end of a run: close what must not outlive it (a Dask cluster or connection)."""
        if self.impl.closes_after_run:
            self.close()
