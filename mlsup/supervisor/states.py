"""The lifecycle of one supervised model, as a pure state machine (a data table, as in h11).

::

    UNLOADED ──load──> LEASING ──lease granted──> STARTING ──worker ready──> READY
        ^                 │                          │                         │
        │            lease failed              worker exited / oom        worker exited
        │                 v                          v                         v
        ├──────────── UNLOADED                    BACKOFF <──────────────────── (crash)
        │                                            │ backoff elapsed → LEASING
        │                                            │ too many crashes → FAILED
        └─ unload / idle / preempted ── DRAINING <── READY, STARTING
                                       (worker terminated, lease released) → UNLOADED

``FAILED`` is left only by an explicit ``load`` (``mlsup load MODEL`` resets a failed model).
"""

from __future__ import annotations

import enum
from typing import Final

from mlsup.errors import IllegalTransition

__all__ = ["TRANSITIONS", "Event", "IllegalTransition", "ModelState", "next_state"]


class ModelState(enum.Enum):
    """Where a supervised model is in its lifecycle."""

    UNLOADED = "unloaded"  #: no worker, no lease
    LEASING = "leasing"  #: waiting for VRAM (queued, or preempting lower priorities)
    STARTING = "starting"  #: lease held; the worker is starting and loading the model
    READY = "ready"  #: serving requests
    DRAINING = "draining"  #: stopping its worker (unload, idle, preemption, shutdown)
    BACKOFF = "backoff"  #: the worker crashed; respawns after a delay
    FAILED = "failed"  #: crashed too often; parked until loaded again explicitly


class Event(enum.Enum):
    """What can happen to a model."""

    LOAD = "load"  #: someone asked for the model
    LEASE_GRANTED = "lease_granted"
    LEASE_FAILED = "lease_failed"  #: timeout, or the request can never fit
    WORKER_READY = "worker_ready"
    WORKER_EXITED = "worker_exited"  #: unexpectedly (crash, OOM, killed)
    GAVE_UP = "gave_up"  #: the restart policy says: too many crashes
    BACKOFF_ELAPSED = "backoff_elapsed"
    DRAIN = "drain"  #: unload, idle timeout, preemption or shutdown
    DRAINED = "drained"  #: the worker is gone and the lease released


_S, _E = ModelState, Event

#: (state, event) -> next state. Pairs not listed are illegal.
TRANSITIONS: Final[dict[tuple[ModelState, Event], ModelState]] = {
    (_S.UNLOADED, _E.LOAD): _S.LEASING,
    (_S.FAILED, _E.LOAD): _S.LEASING,
    (_S.LEASING, _E.LEASE_GRANTED): _S.STARTING,
    (_S.LEASING, _E.LEASE_FAILED): _S.UNLOADED,
    (_S.LEASING, _E.DRAIN): _S.DRAINING,
    (_S.STARTING, _E.WORKER_READY): _S.READY,
    (_S.STARTING, _E.WORKER_EXITED): _S.BACKOFF,
    (_S.STARTING, _E.DRAIN): _S.DRAINING,
    (_S.READY, _E.WORKER_EXITED): _S.BACKOFF,
    (_S.READY, _E.DRAIN): _S.DRAINING,
    (_S.BACKOFF, _E.BACKOFF_ELAPSED): _S.LEASING,
    (_S.BACKOFF, _E.GAVE_UP): _S.FAILED,
    (_S.BACKOFF, _E.DRAIN): _S.DRAINING,
    (_S.DRAINING, _E.DRAINED): _S.UNLOADED,
    # A worker that dies while being drained has simply drained sooner.
    (_S.DRAINING, _E.WORKER_EXITED): _S.DRAINING,
}


def next_state(state: ModelState, event: Event) -> ModelState:
    """The state after event; IllegalTransition if event cannot happen in state."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(
            f"{event.value} cannot happen in state {state.value}",
            state=state.value,
            event=event.value,
        ) from None
