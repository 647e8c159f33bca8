"""Micro-batching: requests that arrive together are answered by one model call.

As TF Serving's and Triton's dynamic batchers do: the first image waits at most `max_wait`
seconds for others, and not at all when no other request is on its way (being read or
preprocessed), so a lone request pays nothing. The model runs one call at a time: on the event
loop when its calls are quick (LiteRT: a thread hand-off would cost more than the call), else
in a thread, so that requests go on being read while it works.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np


class MicroBatcher:
    """Collects (28, 28) images from concurrent requests and predicts them together."""

    def __init__(self, predict, max_batch: int, max_wait: float, inline: bool = False):
        self.predict_batch = predict  # (N, 28, 28) float32 -> (N, 10)
        self.inline = inline  # call the model on the event loop, not in a thread
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self.coming = 0  # requests being read or preprocessed: they may join the next call
        self.arrived = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop after answering what is queued (in-flight requests are answered first)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    @contextlib.contextmanager
    def expecting(self):
        """Mark a request as on its way, so that a model call waits a little for it."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1
            self.arrived.set()  # a batch waiting for this request need wait no more

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for one request's (N, 28, 28) images, from a shared call."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((images, future))
        self.arrived.set()
        return await future

    async def run(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if not self.pending:
                continue
            await self.gather()
            batch, self.pending = self.pending, []
            await self.answer(batch)

    async def gather(self) -> None:
        """Wait, at most max_wait, while more requests are coming and the batch is not full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while self.coming and self.queued() < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                return
            self.arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    def queued(self) -> int:
        return sum(len(images) for images, _ in self.pending)

    async def answer(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        """One model call for the whole batch; each request gets its rows (or the error)."""
        live = [(images, future) for images, future in batch if not future.done()]
        if not live:
            return  # every client went away
        try:
            probabilities = await call(self.predict_batch, self.inline,
                                       np.concatenate([images for images, _ in live]))
        except Exception as error:  # a failing model fails these requests, not the server
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for images, future in live:
            if not future.done():
                future.set_result(probabilities[start:start + len(images)])
            start += len(images)


class DirectPredictor:
    """No batching: each request makes its own model call, one at a time (for comparison)."""

    def __init__(self, predict, inline: bool = False):
        self.predict_batch = predict
        self.inline = inline
        self.lock = asyncio.Lock()

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    @contextlib.contextmanager
    def expecting(self):
        yield

    async def predict(self, images: np.ndarray) -> np.ndarray:
        async with self.lock:  # the interpreter is not thread-safe
            return await call(self.predict_batch, self.inline, images)


async def call(predict, inline: bool, images: np.ndarray) -> np.ndarray:
    """The model's probabilities for the images: on the event loop, or in a thread."""
    if inline:
        return predict(images)
    return await asyncio.to_thread(predict, images)
