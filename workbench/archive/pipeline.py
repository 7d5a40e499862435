"""Writing to an archive in the background: in order, bounded, failures re-raised.

An archiver reads its source in one thread and hands each write (envelope
conversion, Parquet encoding, fsync, gap records) to a :class:`WritePipeline`,
so reading the next batch overlaps writing this one; pyarrow and DuckDB
release the GIL while they work. Jobs run one at a time in submission order,
so a gap record submitted before the batch after it lands first. After a job
fails no later job runs (a later file would leave a hole behind it), and the
failure is raised to the reader at its next :meth:`~WritePipeline.submit`,
:meth:`~WritePipeline.flush` or :meth:`~WritePipeline.close`.

>>> written = []
>>> with WritePipeline() as pipeline:
...     for n in range(3):
...         pipeline.submit(lambda n=n: written.append(n))
>>> written
[0, 1, 2]
>>> pipeline = WritePipeline()
>>> pipeline.submit(lambda: 1 / 0)
>>> pipeline.flush()
Traceback (most recent call last):
...
ZeroDivisionError: division by zero
>>> pipeline.submit(lambda: written.append("never"))
Traceback (most recent call last):
...
ZeroDivisionError: division by zero
>>> pipeline.close()
>>> written
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["WritePipeline"]

_STOP = object()


class WritePipeline:
    """One background thread running write jobs in order; at most ``depth`` wait.

    :meth:`submit` blocks while ``depth`` jobs are waiting, which bounds the
    memory held by batches read but not yet written.
    """

    def __init__(self, *, depth: int = 2, name: str = "wb-archive-write") -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._jobs: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._raised = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job``; raise the error of an earlier job instead if one failed."""
        if self._closed:
            raise RuntimeError("the write pipeline is closed")
        if self._error is not None:  # nothing goes to the archive after a failed write
            self._raised = True
            raise self._error
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every submitted job has run; raise the first failure."""
        if not self._closed:
            self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Run what is queued, stop the thread, raise a failure not raised yet (idempotent)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> WritePipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(BaseException):  # the reader's own error is the one to report
            self.close()

    def _raise(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:
                    job()  # type: ignore[operator]
            except BaseException as exc:  # handed to the reader thread
                self._error = exc
            finally:
                self._jobs.task_done()
