# SPDX-License-Identifier: MIT
"""The asynchronous driver of ``fabric_shm.Worker``: concurrency > 1 and ``async def`` handlers.

``Worker.run()`` with one plain function and concurrency 1 runs the library's one-at-a-time
loop in C++. Everything else comes here: the library's asynchronous form (``_core._AsyncLoop``:
acquire / complete / fail / service / wait_fd, docs/api.md section 6) driven from an asyncio
event loop on the calling thread.

- ``async def`` handlers: ``concurrency`` worker tasks take the acquired items from a queue and
  each awaits the handler directly (no task per item).
- Plain functions: ``concurrency`` daemon threads take the items from a ``SimpleQueue`` and
  leave their outcomes in a deque; one ``call_soon_threadsafe`` wakes the event loop for however
  many finished since (worth it for handlers that release the GIL: I/O, numpy, subprocesses).
- Every library call happens on the event loop's thread: tickets are acquired by the driver,
  and a handler's result (or exception) is completed there as soon as it is there, in
  whatever order handlers finish. The library commits the longest completed prefix, keeps at most
  ``window`` items of a partition in flight, and with ``order='key'`` never hands out an item
  whose key has an earlier one in flight.
- The loop's ``wait_fd()`` (new messages, capacity freed, a retry's backoff over, service due)
  is watched with ``add_reader``; ``service()`` (group heartbeat, lease renewal, commits,
  rebalances) runs whenever it is readable and at least every 50 ms, also while every slot is
  busy with a slow handler.
  While no slot is free the fd is not watched (after a rebalance it can stay readable for items
  the driver cannot take yet, which would spin the event loop); the 50 ms timer services it.
- A handler's outcome is an attempt: a result that cannot be written (not bytes-like, a str that
  is not UTF-8 encodable), any exception, an ``asyncio.CancelledError`` the handler raised
  without its task being cancelled, or a coroutine returned by a plain function fails the
  attempt (retried, then dead-lettered). Only library errors (lease expired, fenced, ...) and
  SystemExit / KeyboardInterrupt end the run.
- Stopping (``worker.stop()``, ``count``, ``idle``) takes no new items and waits for the ones in
  flight. Cancellation (Ctrl-C under ``asyncio.run``: KeyboardInterrupt) cancels the handlers in
  flight instead; their items go uncompleted to the next owner (the pool counted the attempt);
  a handler that swallows the cancellation ends its worker task all the same. Either way the
  loop commits what completed and leaves the group before returning, also when a second
  Ctrl-C interrupts the wait for the cancelled handlers.
"""

import asyncio
import collections
import inspect
import queue
import threading
import time

from ._core import Error as _FabricError
from ._handler_kind import is_async_handler

_SERVICE_EVERY_S = 0.05  # the group heartbeat runs every 20 ms inside the library; leases are renewed far less often


def run(worker, count, idle, stops_at):
    """Worker.run() for the asynchronous form: run_async() in a new event loop. `stops_at`: the
    worker's count of stop() calls when the run was entered (a later stop() ends it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(worker, count, idle, stops_at))
    raise RuntimeError("Worker.run() was called inside a running asyncio event loop: use `await worker.run_async()`")


async def run_async(worker, count, idle, stops_at):
    """Worker.run_async(): see _Driver."""
    return await _Driver(worker, stops_at).run(count, idle)


class _Driver:
    """`concurrency` long-lived worker tasks (async handlers) or threads (plain functions) take
    tickets the driver acquired; a handler that never suspends costs a call, not a Task."""

    def __init__(self, worker, stops_at):
        self.worker = worker
        self.stops_at = stops_at
        self.handler = worker._handler
        self.is_async = is_async_handler(self.handler)
        self.concurrency = worker._concurrency
        self.queue = collections.deque()  # tickets acquired, not yet taken by a worker task
        self.idle = collections.deque()  # futures of worker tasks waiting for a ticket
        self.current = {}  # worker task -> the ticket it is processing
        self.outstanding = 0  # tickets acquired and not yet completed
        self.fatal = None  # a library error raised while completing (lease expired, fenced, ...)
        self.interrupt = None  # a BaseException from a handler (SystemExit, KeyboardInterrupt): stops the run
        self.waiting = None  # the future the driver sleeps on
        self.fd_ready = False
        # Plain functions: `concurrency` threads take tickets from `jobs` and leave their outcome
        # in `finished`; one call_soon_threadsafe wakes the loop for however many finished since.
        self.jobs = queue.SimpleQueue()
        self.finished = collections.deque()
        self.finished_signalled = False
        self.closing = False  # set before the worker tasks are cancelled: a CancelledError is then ours
        self.over = False

    def _wake(self):
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    def _on_fd(self):
        self.fd_ready = True
        self._wake()

    def _settle(self, ticket, outcome, failed):
        try:
            if not failed:
                try:
                    self.loop.complete(ticket, outcome)
                except _FabricError:
                    raise
                except Exception as e:
                    # Not bytes-like, a str with lone surrogates (UnicodeEncodeError), ...: a bug of
                    # the handler, retried then dead-lettered like any exception it raises. The
                    # result is converted before the ticket is taken, so the ticket is still valid.
                    self.loop.fail(ticket, e)
            elif isinstance(outcome, Exception):
                self.loop.fail(ticket, outcome)
            elif isinstance(outcome, asyncio.CancelledError):  # raised by the handler itself (see _work)
                self.loop.fail(ticket, RuntimeError(
                    "the handler raised CancelledError without being cancelled (something it waited for was)"))
            else:  # SystemExit, KeyboardInterrupt: stop; the item stays uncompleted for the next owner
                self.interrupt = outcome
                return
        except BaseException as e:  # a fatal library error: the run ends with it
            self.fatal = e
            return
        self.outstanding -= 1

    def _thread_main(self):
        handler = self.handler
        while True:
            ticket = self.jobs.get()
            if ticket is None:
                return
            try:
                outcome, failed = handler(ticket.item), False
                if inspect.isawaitable(outcome):  # an async handler in disguise: it would never run
                    if inspect.iscoroutine(outcome):
                        outcome.close()  # no "coroutine was never awaited" warning on top
                    outcome, failed = TypeError("handler returned a coroutine: declare it async def"), True
            except BaseException as e:
                outcome, failed = e, True
            self.finished.append((ticket, outcome, failed))  # before the flag: see _collect
            if not self.finished_signalled:
                self.finished_signalled = True
                try:
                    self.aio.call_soon_threadsafe(self._collect)
                except RuntimeError:  # the event loop is closed: the run is over, the ticket dropped
                    return

    def _collect(self):
        if self.over:  # a handler thread that finished after the run: its ticket is dropped
            self.finished.clear()
            return
        self.finished_signalled = False  # before taking them: a thread appending later signals again
        while self.finished:
            ticket, outcome, failed = self.finished.popleft()
            self._settle(ticket, outcome, failed)
        self._wake()

    async def _work(self):
        me = asyncio.current_task()
        while True:
            while not self.queue:
                fut = self.aio.create_future()
                self.idle.append(fut)
                await fut
            ticket = self.queue.popleft()
            self.current[me] = ticket
            try:
                outcome = await self.handler(ticket.item)
                failed = False
            except asyncio.CancelledError as e:
                if self.closing:
                    raise  # shutdown: the ticket is dropped with self.current
                outcome, failed = e, True  # the handler's own (it awaited something cancelled): an attempt
            except BaseException as e:
                outcome, failed = e, True
            del self.current[me]
            if self.over:  # the run ended while this handler ran on (a second Ctrl-C): the ticket is dropped
                return
            self._settle(ticket, outcome, failed)
            self._wake()
            # closing: cancelled, but the handler swallowed the CancelledError and returned
            if self.fatal is not None or self.interrupt is not None or self.closing:
                return

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
        # The open may try a join for up to 10 s while a paused process holds the group's lock:
        # in a thread, so this event loop runs on and a cancellation of this task ends the tries.
        # This run's own abort event: a cancel of another run of the worker does not end it.
        abort = threading.Event()
        opening = self.aio.run_in_executor(None, self.worker._open_async, count, idle, self.aio, abort, self.stops_at)
        try:
            loop = await asyncio.shield(opening)
        except asyncio.CancelledError:
            abort.set()
            # A second cancel here cancels `opening` itself: a loop opened meanwhile is then left
            # to its destructor (it commits and leaves, on the executor's thread).
            try:
                opened = await opening
            except Exception:
                opened = None
            if opened is not None:  # joined just before the cancellation: leave at once
                opened.close()
            raise
        if loop is None:  # stop() or close() while its join waited for the group's lock
            return "stopped"
        self.loop = loop
        workers, threads = [], []
        fd = None
        watching = False
        try:
            try:
                if self.is_async:
                    workers = [self.aio.create_task(self._work()) for _ in range(self.concurrency)]
                else:
                    # Daemon threads: a handler stuck at exit (after Ctrl-C) does not hold the process.
                    for i in range(self.concurrency):
                        t = threading.Thread(target=self._thread_main, name=f"fabric-shm-handler-{i}", daemon=True)
                        t.start()
                        threads.append(t)
                fd = loop.wait_fd()
                self.aio.add_reader(fd, self._on_fd)
                watching = True
                last_service = time.monotonic()
                while True:
                    if self.fatal is not None:
                        raise self.fatal
                    if self.interrupt is not None:
                        raise self.interrupt
                    stopping = self.worker._stop_asked_since(self.stops_at) or loop.finished
                    if stopping:
                        if self.outstanding == 0:
                            break
                        if watching:  # no new items: the fd would keep announcing them
                            self.aio.remove_reader(fd)
                            watching = False
                    now = time.monotonic()
                    if self.fd_ready or now - last_service >= _SERVICE_EVERY_S:
                        if self.fd_ready and watching and self.outstanding >= self.concurrency:
                            # Readable while no slot is free: after a rebalance the library hands
                            # items out again that our stale tickets still hold a slot for. Watched,
                            # the fd would wake the loop continuously until those handlers finish;
                            # the timer services the loop meanwhile, and a freed slot watches again.
                            self.aio.remove_reader(fd)
                            watching = False
                        self.fd_ready = False
                        last_service = now
                        loop.service()
                    free = self.concurrency - self.outstanding
                    if not stopping and free > 0:
                        if not watching:
                            self.aio.add_reader(fd, self._on_fd)
                            watching = True
                        tickets = loop.acquire(free)
                        if tickets:
                            self.outstanding += len(tickets)
                            if self.is_async:
                                self.queue.extend(tickets)
                                for _ in range(min(len(tickets), len(self.idle))):
                                    fut = self.idle.popleft()
                                    if not fut.done():
                                        fut.set_result(None)
                            else:
                                for ticket in tickets:
                                    self.jobs.put(ticket)
                            await asyncio.sleep(0)  # let the workers take them before looking again
                            continue
                    await self._sleep(max(0.0, _SERVICE_EVERY_S - (time.monotonic() - last_service)))
            finally:
                self.closing = True
                if watching:
                    self.aio.remove_reader(fd)
                    watching = False
                for task in workers:
                    task.cancel()
                if workers:  # a second cancellation (Ctrl-C again) may end this wait: see below
                    await asyncio.gather(*workers, return_exceptions=True)
        finally:
            # Synchronous, so it runs even when the wait above was interrupted. Uncompleted tickets
            # are dropped: their items go to the next owner.
            self.over = True
            self.current.clear()
            self.queue.clear()
            self.finished.clear()
            try:
                while True:
                    self.jobs.get_nowait()
            except queue.Empty:
                pass
            for _ in threads:  # each thread ends after its current handler call (threads cannot be cancelled)
                self.jobs.put(None)
            loop.close()  # commits what completed, leaves the group
        if self.worker._stop_asked_since(self.stops_at):
            return "stopped"
        stats = self.worker.stats  # left there by loop.close()
        handled = stats["processed"] + stats["skipped"] + stats["dead_lettered"]
        return "count_reached" if count and handled >= count else "idle"
