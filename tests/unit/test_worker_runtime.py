"""The worker runtimes' settings: what the template is started with, and that the user wins."""

from __future__ import annotations

from mlsup.kit.worker_runtime import (
    USER_CHOICES,
    WORKER_ENV,
    template_additions,
    template_environment,
)


def test_threads_spin_briefly_unless_the_user_chose() -> None:
    assert template_additions({"PATH": "/bin"}) == {"GOMP_SPINCOUNT": "10000"}
    for choice in sorted(USER_CHOICES):
        assert template_additions({choice: "1"}) == {}, choice


def test_the_environment_is_restored_after_the_template_started() -> None:
    environ = {"PATH": "/bin"}
    with template_environment(environ) as added:
        assert added == dict(WORKER_ENV)
        assert environ == {"PATH": "/bin", **WORKER_ENV}
    assert environ == {"PATH": "/bin"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    with template_environment(mine) as added:
        assert added == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}
