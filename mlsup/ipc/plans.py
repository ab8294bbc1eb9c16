"""Plans, and the two drivers that carry them out.

A plan is a generator written once for sync and async callers: it decides everything (which
frames to send, whether a reply is ours, when a deadline passed, whether to retry) and yields
only what must block — an *effect*, a callable taking no arguments (``channel.receive``,
``partial(channel.send, frames)``, ``partial(transport.sleep, s)``) — or, in a stream, an
:class:`Emit` of one item for the consumer. The driver performs the effect (calling it, or
awaiting what it returns) and sends the outcome back in: the value, or the exception thrown
into the plan at the point of the yield, so that the plan's ``finally`` blocks clean up after
a failed send or a cancelled task just as they would around a direct call.

* :func:`run` / :func:`iterate`: the threads driver (effects block);
* :func:`arun` / :func:`aiterate`: the asyncio driver (effects return awaitables).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

__all__ = ["Effect", "Emit", "Plan", "aiterate", "arun", "iterate", "run"]

T = TypeVar("T")

#: Something blocking for the driver to do: call it (threads) or await its result (asyncio).
Effect: TypeAlias = Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Emit:
    """One item of a stream, for the consumer (yielded by stream plans only)."""

    item: Any


#: A plan yields effects (and, in streams, emits), receives their outcomes and returns T.
Plan: TypeAlias = Generator["Effect | Emit", Any, T]


def run(plan: Plan[T]) -> T:
    """Carry out a call plan in this thread; its result, or its exception."""
    send = plan.send
    try:
        step = send(None)
        while True:
            try:
                outcome = step()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan, which decides
                step = plan.throw(exc)
            else:
                step = send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def arun(plan: Plan[T]) -> T:
    """Carry out a call plan in this task. Cancelling the task throws CancelledError into
    the plan at its current effect; the plan cleans up and the cancellation goes on."""
    send = plan.send
    try:
        step = send(None)
        while True:
            try:
                outcome = await step()  # type: ignore[operator]
            except BaseException as exc:  # noqa: BLE001 - CancelledError too: the plan cleans up
                step = plan.throw(exc)
            else:
                step = send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result


def iterate(plan: Plan[None]) -> Iterator[Any]:
    """The items a stream plan emits, carried out in this thread. Abandoning the iterator
    closes the plan, whose cleanup then runs at once."""
    try:
        step = plan.send(None)
        while True:
            if isinstance(step, Emit):
                yield step.item
                step = plan.send(None)
                continue
            try:
                outcome = step()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                step = plan.throw(exc)
            else:
                step = plan.send(outcome)
    except StopIteration:
        return
    finally:
        plan.close()


async def aiterate(plan: Plan[None]) -> AsyncIterator[Any]:
    """The items a stream plan emits, carried out in this task (see :func:`iterate`)."""
    try:
        step = plan.send(None)
        while True:
            if isinstance(step, Emit):
                yield step.item
                step = plan.send(None)
                continue
            try:
                outcome = await step()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                step = plan.throw(exc)
            else:
                step = plan.send(outcome)
    except StopIteration:
        return
    finally:
        plan.close()
