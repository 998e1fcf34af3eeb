# SPDX-License-Identifier: MIT
"""The asynchronous driver of ``fabric_shm.Worker``: concurrency > 1 and ``async def`` handlers.

``Worker.run()`` with one plain function and concurrency 1 runs the library's one-at-a-time
loop in C++. Everything else comes here: the library's asynchronous form (``_core._AsyncLoop``:
acquire / complete / fail / service / wait_fd, docs/api.md section 6) driven from an asyncio
event loop on the calling thread.

- An ``async def`` handler runs as one asyncio task per item; a plain function runs in a
  thread pool of ``concurrency`` threads (worth it for handlers that release the GIL: I/O,
  numpy, subprocesses).
- Every library call happens on the event loop's thread: tickets are acquired there, and a
  handler's result (or exception) is completed there by the task's done-callback, in whatever
  order handlers finish. The library commits the longest completed prefix, keeps at most
  ``window`` items of a partition in flight, and with ``order='key'`` never hands out an item
  whose key has an earlier one in flight.
- The loop's ``wait_fd()`` (new messages, capacity freed, a retry's backoff over, service due)
  is watched with ``add_reader``; ``service()`` (group heartbeat, lease renewal, commits,
  rebalances) runs whenever it is readable and at least every 50 ms, also while every slot is
  busy with a slow handler.
- Stopping (``worker.stop()``, ``count``, ``idle``) takes no new items and waits for the ones in
  flight. Cancellation (Ctrl-C under ``asyncio.run``: KeyboardInterrupt) cancels the handlers in
  flight instead; their items go uncompleted to the next owner (the pool counted the attempt).
  Either way the loop commits what completed and leaves the group before returning.
"""

import asyncio
import concurrent.futures
import inspect
import time

_SERVICE_EVERY_S = 0.05  # the group heartbeat runs every 20 ms inside the library; leases are renewed far less often


def is_async_handler(handler):
    """True for an ``async def`` function (or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))


def run(worker, count=0, idle=None):
    """Worker.run() for the asynchronous form: run_async() in a new event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(worker, count, idle))
    raise RuntimeError("Worker.run() was called inside a running asyncio event loop: use `await worker.run_async()`")


async def run_async(worker, count=0, idle=None):
    """Worker.run_async(): see _Driver."""
    return await _Driver(worker).run(count, idle)


class _Driver:
    def __init__(self, worker):
        self.worker = worker
        self.handler = worker._handler
        self.is_async = is_async_handler(self.handler)
        self.concurrency = worker._concurrency
        self.running = {}  # asyncio future -> its _Ticket
        self.fatal = None  # a library error raised while completing (lease expired, fenced, ...)
        self.interrupt = None  # a BaseException from a handler (SystemExit): stops the run
        self.waiting = None  # the future the driver sleeps on
        self.fd_ready = False

    def _wake(self):
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    def _on_fd(self):
        self.fd_ready = True
        self._wake()

    def _start(self, ticket, executor):
        item = ticket.item
        try:
            if self.is_async:
                fut = self.aio.create_task(self.handler(item))
            else:
                fut = self.aio.run_in_executor(executor, self.handler, item)
        except Exception as e:  # calling the handler failed at once (a wrong signature): a failed attempt
            self.loop.fail(ticket, e)
            return
        self.running[fut] = ticket
        fut.add_done_callback(self._done)

    def _done(self, fut):
        ticket = self.running.pop(fut, None)
        if ticket is None or fut.cancelled():
            return  # cancelled at shutdown: the ticket is dropped, its item redelivered
        try:
            exc = fut.exception()
            if exc is None:
                try:
                    self.loop.complete(ticket, fut.result())
                except TypeError as e:  # the result is not bytes-like: a bug of the handler, retried
                    self.loop.fail(ticket, e)
            elif isinstance(exc, Exception):
                self.loop.fail(ticket, exc)
            else:  # SystemExit, KeyboardInterrupt: stop; the item stays uncompleted for the next owner
                self.interrupt = exc
        except BaseException as e:  # a fatal library error: the run ends with it
            self.fatal = e
        self._wake()

    async def _sleep(self, timeout):
        self.waiting = self.aio.create_future()
        timer = self.aio.call_later(timeout, self._wake)
        try:
            await self.waiting
        finally:
            timer.cancel()
            self.waiting = None

    async def run(self, count, idle):
        self.aio = asyncio.get_running_loop()
        self.loop = loop = self.worker._open_async(count, idle)
        executor = None
        if not self.is_async:
            executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency,
                                                             thread_name_prefix="fabric-shm-handler")
        fd = loop.wait_fd()
        self.aio.add_reader(fd, self._on_fd)
        watching = True
        last_service = time.monotonic()
        try:
            while True:
                if self.fatal is not None:
                    raise self.fatal
                if self.interrupt is not None:
                    raise self.interrupt
                stopping = self.worker._stop_requested or loop.finished
                if stopping:
                    if not self.running:
                        break
                    if watching:  # no new items: the fd would keep announcing them
                        self.aio.remove_reader(fd)
                        watching = False
                now = time.monotonic()
                if self.fd_ready or now - last_service >= _SERVICE_EVERY_S:
                    self.fd_ready = False
                    last_service = now
                    loop.service()
                free = self.concurrency - len(self.running)
                if not stopping and free > 0:
                    tickets = loop.acquire(free)
                    for ticket in tickets:
                        self._start(ticket, executor)
                    if tickets:
                        await asyncio.sleep(0)  # let the handlers start before looking again
                        continue
                await self._sleep(max(0.0, _SERVICE_EVERY_S - (time.monotonic() - last_service)))
        finally:
            if watching:
                self.aio.remove_reader(fd)
            pending = list(self.running)
            for fut in pending:
                fut.cancel()
            if pending and self.is_async:
                await asyncio.gather(*pending, return_exceptions=True)
            self.running.clear()  # uncompleted tickets dropped: redelivered to the next owner
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            loop.close()  # commits what completed, leaves the group
        if self.worker._stop_requested:
            return "stopped"
        stats = self.worker.stats  # left there by loop.close()
        handled = stats["processed"] + stats["skipped"] + stats["dead_lettered"]
        return "count_reached" if count and handled >= count else "idle"
