"""Ray for batch jobs: one session (an embedded local Ray, or an existing cluster) and a pool of
actors that runs jobs with bounded retries when a worker dies.

- ``ray_session(address)``: no address starts a local Ray in this process (bound to 127.0.0.1,
  no dashboard) and always shuts it down, on errors, Ctrl-C and SIGTERM too; an address
  (``host:port``, ``ray://host:port`` or ``auto``) connects to a running cluster and only
  disconnects from it.
- ``ActorPool.run(jobs)``: each job goes to an idle actor. A worker that dies (killed, out of
  memory, its node lost) is replaced by a new actor and its job queued again, at most
  ``retries`` times; an exception raised by the job itself (an unreadable file) is that job's
  failure and is not retried. Every failure comes back by the job's name; the others finish.

Ray is imported lazily: nothing here is needed for a run without ``--ray``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from daefr.atomic import Terminated

log = logging.getLogger(__name__)

# Bounds of the flags: more actors than this is a typo, and so are more retries.
MAX_ACTORS = 4096
MAX_RETRIES = 100
# CPU threads per actor when neither --threads nor --ray-actors says: every actor holds a model
# (the official one is about 1 GB in memory), so one per CPU would be many copies for little gain.
DEFAULT_THREADS = 4
# Joining a cluster takes seconds; ray.init's own retries on a silent one last many minutes.
CONNECT_TIMEOUT_S = 60.0
# Environment variables a job's actors receive from the driver (fault injection in tests, see
# daefr.runtime.ray_jobs): passed through runtime_env so actors on a cluster see them too.
FORWARDED_ENV = ("DAEFR_RAY_FAULT_ONCE", "DAEFR_RAY_FAULT_NAME")
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to try."""


class RayUsageError(ValueError):
    """A --ray flag that cannot work (a malformed address, more actors than the cluster holds)."""


def check_address(address: str) -> str:
    """``address`` if it is ``auto``, ``host:port`` or ``ray://host:port``; RayUsageError otherwise."""
    match = _ADDRESS.match(address)
    if address == "auto" or (match and 0 < int(match.group(3)) < 65536):
        return address
    hint = " (a path: put --ray after the inputs, or write --ray=ADDRESS)" if os.path.exists(address) else ""
    raise RayUsageError(
        f"--ray {address!r}: not a Ray address{hint}; give host:port (from `ray start --head`), "
        "ray://host:port or auto, or no address for a local Ray"
    )


def import_ray():  # noqa: ANN201 (the ray module)
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray: Ray is not installed; pip install 'daefr[ray]'") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds when nothing listens at host:port (ray.init would retry for a minute)."""
    match = _ADDRESS.match(address)
    if match is None:  # "auto": Ray finds the cluster this machine joined, or says it found none
        return
    host, port = match.group(2).strip("[]"), int(match.group(3))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise RayUnavailable(
            f"--ray {address}: no Ray cluster answers there ({err.strerror or err}); start one with "
            "`ray start --head` and pass the address it prints, or drop the address for a local Ray"
        ) from None


@dataclass(frozen=True)
class Cluster:
    """What the session is connected to. local: started here (and shut down at the end)."""

    address: str
    local: bool
    cpus: float
    gpus: float


def _is_loopback(address: str | None) -> bool:
    match = _ADDRESS.match(address or "")
    if match is None:
        return False
    try:
        return ipaddress.ip_address(socket.gethostbyname(match.group(2).strip("[]"))).is_loopback
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _watchdog(address: str, seconds: float) -> Iterator[None]:
    """ray.init retries a silent cluster for many minutes inside native code, deaf to Ctrl-C and
    SIGTERM: past ``seconds`` the process says so and exits 2 (nothing of ours is open yet)."""

    def expire() -> None:
        print(f"--ray {address}: no answer from the Ray cluster within {seconds:.0f} s; check the address "
              "`ray start --head` printed (and that this machine can reach it)", file=sys.stderr, flush=True)  # fmt: skip
        os._exit(2)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextlib.contextmanager
def ray_session(address: str | None = None, verbose: bool = False) -> Iterator[Cluster]:
    """Ray for the length of the ``with``; see the module docstring."""
    if address is not None:
        check_address(address)
        _check_reachable(address)
    # No usage statistics: a batch job has no business calling home (nor can it, offline).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None or _is_loopback(address):
        # Ray turns 127.0.0.1 into the machine's reachable address (resolve_ip_for_localhost), both
        # for the ports it opens and for an address it joins; with "clusters disabled" it keeps the
        # loopback one, so the embedded Ray listens on 127.0.0.1 only and a cluster started on
        # 127.0.0.1 is found there. Read when ray is first imported, hence before the import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    # configure_logging=False: Ray would put its own handler on the root logger (our CLIs set up
    # logging at their edge, and a handler holding a closed stream outlives the session).
    common = {"log_to_driver": verbose, "configure_logging": False}
    # ray.init installs its own SIGTERM handler and ray.shutdown leaves it: put the caller's back.
    before = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    if address is None:
        try:
            ray.init(include_dashboard=False, **common)
        except (ConnectionError, RuntimeError, ValueError, OSError) as err:
            _shutdown(ray, before)
            raise RayUnavailable(f"--ray: the local Ray did not start ({_first_line(err)})") from None
    else:
        try:
            with _watchdog(address, CONNECT_TIMEOUT_S):
                ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as err:
            _shutdown(ray, before)
            raise RayUnavailable(f"--ray {address}: cannot join the cluster ({_why_not(ray, err)})") from None
    # Ours unwinds like Ctrl-C so every ``finally`` (the shutdown below, temporary files) runs,
    # then exits 128 + 15.
    if before is not None:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        resources = ray.cluster_resources()
        cluster = Cluster(
            address=address or "local",
            local=address is None,
            cpus=float(resources.get("CPU", 0)),
            gpus=float(resources.get("GPU", 0)),
        )
        log.info(
            "Ray %s: %s, %g CPUs, %g GPUs", ray.__version__,
            "local (this process)" if cluster.local else address, cluster.cpus, cluster.gpus,
        )  # fmt: skip
        yield cluster
    finally:
        _shutdown(ray, before)  # local: stops the cluster; connected: disconnects (our actors go too)


def _shutdown(ray, sigterm_handler: object) -> None:  # noqa: ANN001
    ray.shutdown()
    if sigterm_handler is not None:
        signal.signal(signal.SIGTERM, sigterm_handler)


def _why_not(ray, err: BaseException) -> str:  # noqa: ANN001
    """The reason ray.init gives, or the one it chained below (a missing auth token)."""
    seen = err
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return (
                "it wants its auth token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
                "RAY_AUTH_TOKEN_PATH) as on the head node"
            )
        seen = seen.__cause__ or seen.__context__
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


@dataclass(frozen=True)
class ActorShape:
    """How many actors and what each reserves: ``num_gpus=1`` each on CUDA, else ``threads`` CPUs."""

    actors: int
    threads: int
    gpus: int

    @staticmethod
    def plan(cluster: Cluster, actors: int | None, threads: int, cuda: bool) -> ActorShape:
        """Actor count and threads that fit ``cluster`` (RayUsageError naming the flags otherwise).
        actors None: one per GPU on CUDA, else one per ``threads`` CPUs (threads 0: the CPUs
        shared out over the actors asked for, else DEFAULT_THREADS each)."""
        if actors is not None and not 1 <= actors <= MAX_ACTORS:
            raise RayUsageError(f"--ray-actors {actors}: must be within 1..{MAX_ACTORS}")
        if threads < 0:
            raise RayUsageError(f"--threads {threads}: must be >= 0")
        cpus = int(cluster.cpus)
        if cuda:
            gpus = int(cluster.gpus)
            if gpus < 1:
                raise RayUsageError("--device cuda with --ray: the Ray cluster has no GPUs; use --device cpu")
            n = actors or gpus
            if n > gpus:
                raise RayUsageError(f"--ray-actors {n}: one GPU per actor, and the cluster has {gpus}")
            return ActorShape(n, max(threads, 1), 1)
        if cpus < 1:
            raise RayUsageError("--ray: the Ray cluster has no CPUs to run actors on")
        per = threads or (max(1, cpus // actors) if actors else min(DEFAULT_THREADS, cpus))
        n = actors or max(1, cpus // per)
        if n * per > cpus:
            raise RayUsageError(
                f"--ray-actors {n} x --threads {per} needs {n * per} CPUs and the cluster has {cpus}; "
                "ask for fewer actors or threads"
            )
        return ActorShape(n, per, 0)

    def options(self) -> dict[str, Any]:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        opts: dict[str, Any] = {"num_cpus": self.threads if not self.gpus else 1, "num_gpus": self.gpus}
        if env:
            opts["runtime_env"] = {"env_vars": env}
        return opts


@dataclass
class Job:
    """One unit of work: ``key`` names it to the user (a file, a segment), ``method`` and ``args``
    are the actor call (``pass_attempt``: the attempt number, 0 first, is appended to them).
    ``split``: when the job's retries are spent, the jobs to try once each instead (one per file
    of a batch, so a file that kills every worker fails alone and the rest of its batch is written)."""

    key: str
    method: str
    args: tuple
    attempts: int = 0
    split: Callable[[Job], list[Job]] | None = None
    pass_attempt: bool = False

    def call_args(self) -> tuple:
        return (*self.args, self.attempts) if self.pass_attempt else self.args


@dataclass
class Failure:
    key: str
    reason: str
    attempts: int


@dataclass
class PoolReport:
    """What ``run`` did: failures by job name, worker deaths, retries."""

    failures: list[Failure] = field(default_factory=list)
    deaths: int = 0
    retried: int = 0


def _death_errors(ray) -> tuple[type[BaseException], ...]:  # noqa: ANN001
    exc = ray.exceptions
    names = (
        "RayActorError",
        "WorkerCrashedError",
        "OutOfMemoryError",
        "NodeDiedError",
        "LocalRayletDiedError",
    )
    return tuple(getattr(exc, n) for n in names if hasattr(exc, n))


def task_error_message(err: BaseException) -> str:
    """The job's own exception in one line (Ray wraps it with a remote traceback)."""
    cause = getattr(err, "cause", None)
    text = str(cause) if cause is not None else str(err)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


class ActorPool:
    """``shape.actors`` actors of ``actor_cls(*init_args)``; ``ready()`` returns what each says
    about itself (its constructor's error, if any, is for the caller to raise)."""

    def __init__(self, actor_cls: type, init_args: tuple, shape: ActorShape, retries: int) -> None:
        if not 0 <= retries <= MAX_RETRIES:
            raise RayUsageError(f"--retries {retries}: must be within 0..{MAX_RETRIES}")
        self.ray = import_ray()
        self.remote_cls = self.ray.remote(actor_cls).options(**shape.options())
        self.init_args = init_args
        self.retries = retries
        self.actors = [self._new() for _ in range(shape.actors)]

    def _new(self):  # noqa: ANN202 (an actor handle)
        return self.remote_cls.remote(*self.init_args)

    def ready(self) -> list[Any]:
        return self.ray.get([a.ready.remote() for a in self.actors])

    def run(
        self,
        jobs: list[Job],
        on_done: Callable[[Job, Any], None],
        on_poll: Callable[[], None] | None = None,
        poll_s: float = 0.5,
    ) -> PoolReport:
        """Run every job; ``on_done(job, result)`` for each success, ``on_poll()`` while waiting."""
        ray, deaths = self.ray, _death_errors(self.ray)
        report = PoolReport()
        pending, idle = deque(jobs), list(self.actors)
        inflight: dict[Any, tuple[Any, Job]] = {}
        while pending or inflight:
            while pending and idle:
                actor, job = idle.pop(), pending.popleft()
                inflight[getattr(actor, job.method).remote(*job.call_args())] = (actor, job)
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
            if on_poll is not None:
                on_poll()
            for ref in done:
                actor, job = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except deaths as err:
                    report.deaths += 1
                    idle.append(self._replace(actor))
                    retry = self._retry(job, err, report)
                    pending.extend(retry)
                except ray.exceptions.RayTaskError as err:
                    idle.append(actor)
                    report.failures.append(Failure(job.key, task_error_message(err), job.attempts + 1))
                else:
                    idle.append(actor)
                    on_done(job, result)
        return report

    def _replace(self, dead):  # noqa: ANN001, ANN202
        with contextlib.suppress(Exception):  # already gone is fine
            self.ray.kill(dead, no_restart=True)
        fresh = self._new()
        self.actors[self.actors.index(dead)] = fresh
        return fresh

    def _retry(self, job: Job, err: BaseException, report: PoolReport) -> list[Job]:
        job.attempts += 1
        why = f"its worker died ({type(err).__name__})"
        if job.attempts <= self.retries:
            log.warning("%s: %s; retrying on a new worker (attempt %d of %d)", job.key, why, job.attempts + 1,
                        self.retries + 1)  # fmt: skip
            report.retried += 1
            return [job]
        if job.split is not None:
            parts = job.split(job)
            for part in parts:  # one more attempt each
                part.attempts = self.retries
            log.warning("%s: %s on each of %d attempts; trying its %d parts one by one", job.key, why,
                        job.attempts, len(parts))  # fmt: skip
            report.retried += len(parts)
            return parts
        report.failures.append(Failure(job.key, f"{why} on each of {job.attempts} attempts", job.attempts))
        return []

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors = []
