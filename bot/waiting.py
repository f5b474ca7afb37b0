"""Waiting that a shutdown can interrupt: loops rest here, never in a bare sleep."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def rest(stop: asyncio.Event, *wake: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    """Return when `stop` or any `wake` event is set, or after `timeout` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in (stop, *wake)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run `work` unless `stop` is set first; then `work` is cancelled and (False, None) returned.

    Only for work that is safe to abandon half-way, such as a long poll.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False, None
