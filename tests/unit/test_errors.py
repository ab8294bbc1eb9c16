from __future__ import annotations

import pickle
import signal

import pytest

import mlsup
from mlsup import errors


def test_every_public_error_derives_from_the_root_or_is_an_interrupt() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, (errors.MlsupError, errors.Interrupt)), name


def test_interrupts_are_not_swallowed_by_except_exception() -> None:
    with pytest.raises(errors.YieldRequested):
        try:
            raise errors.YieldRequested("preempted")
        except Exception:
            pytest.fail("a loader's except Exception swallowed a preemption")


def test_context_is_shown_and_kept() -> None:
    exc = errors.LeaseLost("lease expired", lease_id="abc", gpu=0, pid=None)
    assert exc.context == {"lease_id": "abc", "gpu": 0}
    assert "lease_id='abc'" in str(exc) and "gpu=0" in str(exc)


def test_wire_round_trip_keeps_type_message_and_context() -> None:
    exc = errors.ModelOOM("out of memory", model="m", gpu=1)
    back = errors.error_from_wire(exc.to_wire())
    assert type(back) is errors.ModelOOM
    assert back.message == "out of memory" and back.context == {"model": "m", "gpu": 1}


def test_unknown_or_hostile_error_names_become_remote_errors() -> None:
    back = errors.error_from_wire({"type": "SystemExit", "message": "bye", "context": {}})
    assert type(back) is errors.RemoteError
    assert back.context["remote_type"] == "SystemExit"
    assert isinstance(errors.error_from_wire([1, 2]), errors.ProtocolError)
    weird = errors.error_from_wire({"type": 3, "message": None, "context": {1: 2}})
    assert type(weird) is errors.RemoteError and weird.context == {"remote_type": "?"}


def test_worker_crashed_names_the_signal() -> None:
    exc = errors.WorkerCrashed.from_returncode(-signal.SIGKILL, model="m", pid=7)
    assert exc.context["signal"] == "SIGKILL" and "SIGKILL" in str(exc)
    assert errors.WorkerCrashed.from_returncode(3).context["exitcode"] == 3


def test_errors_pickle_for_local_tools() -> None:
    exc = errors.ModelNotFound("no model 'x'", model="x")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is errors.ModelNotFound and back.context == {"model": "x"}


def test_public_api_reexports_errors() -> None:
    assert mlsup.MlsupError is errors.MlsupError
    assert set(errors.__all__) - {"error_from_wire"} <= set(mlsup.__all__)


def test_argument_and_usage_errors_are_also_the_builtin_kinds() -> None:
    # Code that caught ValueError / RuntimeError before they joined the tree still works.
    bad = errors.InvalidArgument("vram_mb must be a positive integer", model="m")
    assert isinstance(bad, errors.ConfigError) and isinstance(bad, ValueError)
    closed = errors.UsageError("closed")
    assert isinstance(closed, errors.MlsupError) and isinstance(closed, RuntimeError)
    assert isinstance(errors.CannotListen("in use"), errors.TransportError)
    assert isinstance(errors.NoWorkerLog("none", model="m"), errors.ModelError)


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidArgument,
        errors.CannotListen,
        errors.NoWorkerLog,
        errors.UsageError,
        errors.BenchmarkError,
    ],
)
def test_new_errors_cross_the_wire_as_themselves(cls: type[errors.MlsupError]) -> None:
    back = errors.error_from_wire(cls("what happened", model="m").to_wire())
    assert type(back) is cls and back.context == {"model": "m"}


def test_every_error_class_says_when_it_is_raised() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert vars(obj).get("__doc__"), f"{name} has no docstring of its own"
            assert name in errors.__doc__, f"{name} is missing from the drawn tree"
