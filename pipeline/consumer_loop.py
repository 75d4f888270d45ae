"""aiokafka's consumer on the stages' own event loop, not on a thread of its own.

faust runs aiokafka's consumer in a thread with an event loop of its own
(``AIOKafkaConsumerThread``, a mode ``QueueServiceThread``). Every fetch the stages take
crosses between the two threads twice: faust's fetcher puts the call on the thread's
method queue, and the thread wakes the stages' loop through its self-pipe to hand the
records back. Each crossing, and each socket call of the consumer's thread, lets go of
Python's interpreter lock and waits for the stages' thread to give it back (at the next
5 ms switch, while a stage batch runs), so a record waited on the lock twice over before
a stage saw it.

:class:`LoopConsumerThread` is faust's consumer thread with the thread taken out: it is
started, run and stopped as a plain mode ``Service`` on the worker's loop, and
``call_thread`` awaits the call in place. faust's rebalance callbacks still go through
the consumer's method queue, which now runs on the same loop; aiokafka's fetcher,
heartbeat and coordinator tasks run there beside the stages.

Chosen by ``consumer_thread`` (``OMNISTITCH_CONSUMER_THREAD``): off (the loop) by
default; on, faust's own thread. Measured (docs/performance-history.md, sessions 18 and
19), same-run pairs of the curve command at 2,000 ev/s offered: the end-to-end median
lower in 20 pairs of 22 (session 19: 31 against 45 ms, medians of six), each faust hop's
median about a third lower, the p99 better in about half the pairs and worse in the rest;
the 10,000-event drains of session 19's pairs faster in six of six (median 1.5x), its
50,000-event drains within the noise (0.70-1.25x); the worker's CPU an offered event about
the same (+0-25 us). And in the kill -9 test faust lost records on their way around the
rebalances in 4 runs of 10 on its thread, none of 17 on the loop (read again either way:
pipeline/offset_order.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka as driver
from mode import Service
from mode.utils.futures import maybe_async

from pipeline.stage_consumer import StageConsumer


class LoopConsumerThread(driver.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, run as a service on its parent's loop."""

    # mode's ServiceThread waits for its thread to report the shutdown; nothing here does
    wait_for_shutdown = False

    def __init__(self, consumer: StageConsumer, **kwargs: Any) -> None:
        loop = kwargs.pop("loop", None) or consumer.loop
        # thread_loop is the parent's loop: the service's events, aiokafka's futures and
        # faust's fetches all live on it.
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    # mode's ServiceThread starts a thread and stops it; a plain Service does neither.
    async def start(self) -> None:
        await Service.start(self)

    async def maybe_start(self) -> bool:
        return await Service.maybe_start(self)

    async def stop(self) -> None:
        await Service.stop(self)

    async def crash(self, reason: BaseException) -> None:
        await Service.crash(self, reason)

    async def on_stop(self) -> None:
        # the thread's own stop (aiokafka's consumer stopped) now runs with the service's
        await self.on_thread_stop()

    def _stopped_set(self) -> None:
        self._stopped.set()

    def set_shutdown(self) -> None:
        self._shutdown.set()

    async def _stop_children(self) -> None:
        await self._default_stop_children()

    async def _stop_futures(self) -> None:
        await self._default_stop_futures()

    async def _stop_exit_stacks(self) -> None:
        await self._default_stop_exit_stacks()

    # The calls faust puts on the thread's method queue (some plain functions, some
    # coroutine functions), run in place.
    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def cast_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.add_future(maybe_async(fun(*args, **kwargs)))


class LoopStageConsumer(StageConsumer):
    """:class:`StageConsumer` with aiokafka on the stages' loop (:class:`LoopConsumerThread`)."""

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return LoopConsumerThread(self, loop=self.loop, beacon=self.beacon)
