"""Where trials run: in the driver process (one worker) or as Ray tasks (several).

The search driver asks Optuna for a trial, hands its payload to an executor with
:meth:`submit`, and takes results back in completion order with :meth:`wait_one`. Both
executors call the same module-level function ``fn(context, payload)``; the context (the
task, its model and data, the space, the predictors) is shipped to Ray once with
``ray.put`` and shared by every task.

``fn`` should catch its own errors and return them as data, so that the driver can record a
failed trial and go on; an exception that escapes anyway is returned by :meth:`wait_one` in
place of the result. A Ray worker lost mid-task (its node died or was removed, or Ray's
memory monitor killed it) comes back as :class:`WorkerLostError`: the task is not retried,
so that a payload that kills its worker is not run again. Each Ray result also says which
node ran it (:meth:`RayExecutor.node_of`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from nas._errors import NASError

_logger = logging.getLogger(__name__)

C = TypeVar("C")
K = TypeVar("K", bound=Hashable)
TrialFn = Callable[[Any, Any], Any]


class WorkerLostError(NASError, RuntimeError):
    """The Ray worker running a payload died before returning (node lost, worker killed)."""


class SerialExecutor(Generic[K]):
    """Runs each submitted payload in this process, one at a time, when it is waited for.

    Ray is never imported. Like a Ray worker, a payload runs with one torch thread: small
    models gain little from intra-op threads and lose a lot when cores are shared, and one
    core per worker keeps ``workers`` the one knob for how many cores a search uses.
    """

    def __init__(self, fn: TrialFn, context: Any) -> None:
        self.fn = fn
        self.context = context
        self.capacity = 1
        self._queue: deque[tuple[K, Any]] = deque()

    @property
    def pending(self) -> int:
        """Payloads submitted and not yet returned by :meth:`wait_one`."""
        return len(self._queue)

    def submit(self, key: K, payload: Any) -> None:
        """Queue ``payload``; ``key`` comes back with its result."""
        self._queue.append((key, payload))

    def wait_one(self) -> tuple[K, Any]:
        """Run the oldest queued payload; return ``(key, result or escaped exception)``."""
        import torch

        key, payload = self._queue.popleft()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return key, self.fn(self.context, payload)
        except Exception as exc:  # the driver records it as a failed trial
            return key, exc
        finally:
            torch.set_num_threads(threads)

    def node_of(self, key: K) -> str | None:
        """Where ``key`` ran: always here (``None``)."""
        return None

    def cancel_all(self) -> list[K]:
        """Drop queued payloads and return their keys."""
        keys = [key for key, _ in self._queue]
        self._queue.clear()
        return keys

    def shutdown(self) -> None:
        """Nothing to release."""


# Ray worker process -> the context it deserialized, by object id. Ray resolves an argument
# ObjectRef anew for every task, so a context passed directly would be unpickled per trial
# (the model, the data, and every cache hanging off them, such as the teacher's logits).
_WORKER_CONTEXT: dict[str, Any] = {}


def _run_in_worker(fn: TrialFn, context_box: list[Any], payload: Any) -> tuple[str, Any]:
    """Body of a Ray task: ``(Ray node id, fn's result)``, run with one torch thread.

    ``context_box`` holds the context's ObjectRef inside a list, so that Ray passes the
    reference instead of the value; it is fetched once per worker process and kept.
    """
    import ray
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    ref = context_box[0]
    key = ref.hex()
    context = _WORKER_CONTEXT.get(key)
    if context is None:
        _WORKER_CONTEXT.clear()
        context = _WORKER_CONTEXT[key] = ray.get(ref)
    return ray.get_runtime_context().get_node_id(), fn(context, payload)


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a task whose worker or node went away (not the task's own error)."""
    from ray import exceptions as rx

    return (
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.LocalRayletDiedError,
        rx.ObjectLostError,
        rx.OutOfMemoryError,
    )


class RayExecutor(Generic[K]):
    """Runs payloads as Ray tasks, ``workers`` at a time.

    Args:
        fn: Module-level function ``fn(context, payload) -> result``.
        context: Shared state, put in Ray's object store once.
        workers: Tasks running at once (each asks for one CPU).
        address: A Ray cluster address; ``None`` starts a local Ray with ``workers`` CPUs
            (and shuts it down in :meth:`shutdown`).
    """

    def __init__(
        self, fn: TrialFn, context: Any, *, workers: int, address: str | None = None
    ) -> None:
        import ray

        self.fn = fn
        self.capacity = workers
        self._started = False
        if not ray.is_initialized():
            if address:
                _logger.info("connecting to the Ray cluster at %s", address)
                ray.init(address=address, log_to_driver=True)
            else:
                _logger.info("starting a local Ray with %d CPUs", workers)
                ray.init(
                    num_cpus=workers,
                    include_dashboard=False,
                    log_to_driver=True,
                    configure_logging=False,
                )
            self._started = True
        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=0)(_run_in_worker)
        self._context_ref = ray.put(context)
        self._fn_ref = ray.put(fn)
        self._pending: dict[Any, K] = {}
        self._nodes: dict[K, str] = {}

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet returned by :meth:`wait_one`."""
        return len(self._pending)

    def submit(self, key: K, payload: Any) -> None:
        """Start a Ray task for ``payload``."""
        ref = self._task.remote(self._fn_ref, [self._context_ref], payload)
        self._pending[ref] = key

    def wait_one(self) -> tuple[K, Any]:
        """Block until some task finishes; return ``(key, result or exception)``.

        A task whose worker was lost returns a :class:`WorkerLostError` naming Ray's error.
        """
        ready, _ = self._ray.wait(list(self._pending), num_returns=1)
        ref = ready[0]
        key = self._pending.pop(ref)
        try:
            node, result = self._ray.get(ref)
        except _lost_worker_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            lost = WorkerLostError(
                f"the Ray worker running it was lost ({type(exc).__name__}: {first}); its node "
                "died or left the cluster, or the worker was killed (out of memory?)"
            )
            lost.__cause__ = exc
            return key, lost
        except Exception as exc:  # RayTaskError: fn raised after all
            return key, exc
        self._nodes[key] = node
        return key, result

    def node_of(self, key: K) -> str | None:
        """The Ray node id that ran ``key`` (once :meth:`wait_one` returned it), else None."""
        return self._nodes.get(key)

    def cancel_all(self) -> list[K]:
        """Cancel running tasks and return their keys."""
        keys = list(self._pending.values())
        for ref in self._pending:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                _logger.debug("could not cancel a Ray task", exc_info=True)
        self._pending.clear()
        return keys

    def shutdown(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(
    fn: TrialFn, context: Any, *, workers: int, address: str | None = None
) -> SerialExecutor[Any] | RayExecutor[Any]:
    """A :class:`SerialExecutor` for one worker (no Ray), else a :class:`RayExecutor`."""
    if workers <= 1 and address is None:
        return SerialExecutor(fn, context)
    return RayExecutor(fn, context, workers=workers, address=address)


__all__ = ["RayExecutor", "SerialExecutor", "WorkerLostError", "make_executor"]
