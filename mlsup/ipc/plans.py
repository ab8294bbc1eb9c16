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


class _Stepper:
    """Where a plan stands: the outcome (or failure) of its last effect, and its result."""

    __slots__ = ("failure", "outcome", "plan", "result")

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.outcome: Any = None
        self.failure: BaseException | None = None
        self.result: Any = None

    def step(self) -> Effect | Emit | None:
        """The plan's next step, given the last outcome; None once it returned."""
        failure, outcome, self.failure, self.outcome = self.failure, self.outcome, None, None
        try:
            if failure is not None:
                return self.plan.throw(failure)
            return self.plan.send(outcome)
        except StopIteration as stop:
            self.result = stop.value
            return None


async def arun(plan: Plan[T]) -> T:
    """Carry out a call plan in this task. Cancelling the task throws CancelledError into
    the plan at its current effect; the plan cleans up and the cancellation goes on."""
    stepper = _Stepper(plan)
    while (effect := stepper.step()) is not None:
        try:
            stepper.outcome = await effect()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - CancelledError too: the plan cleans up
            stepper.failure = exc
    result: T = stepper.result
    return result


def _next_item(plan: Plan[None]) -> Plan[Emit | None]:
    """A call plan that carries a stream plan on to its next item: the Emit, or None once
    the stream ended. Effects pass through; an effect's failure is thrown into the stream."""
    stepper = _Stepper(plan)
    while (step := stepper.step()) is not None and not isinstance(step, Emit):
        try:
            stepper.outcome = yield step
        except BaseException as exc:  # noqa: BLE001 - the stream plan decides
            stepper.failure = exc
    return step


def iterate(plan: Plan[None]) -> Iterator[Any]:
    """The items a stream plan emits, carried out in this thread. Abandoning the iterator
    closes the plan, whose cleanup then runs at once."""
    try:
        while (emit := run(_next_item(plan))) is not None:
            yield emit.item
    finally:
        plan.close()


async def aiterate(plan: Plan[None]) -> AsyncIterator[Any]:
    """The items a stream plan emits, carried out in this task (see :func:`iterate`)."""
    try:
        while (emit := await arun(_next_item(plan))) is not None:
            yield emit.item
    finally:
        plan.close()
