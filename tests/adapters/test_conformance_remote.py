"""What every adapter of a remote manager must do beyond the basics: batch its status
calls, fail clearly when the manager is away or refuses the credential; and what every
adapter that can lose a job must report."""

from __future__ import annotations

import pytest

from adapters.base import AuthenticationFailed, ManagerUnavailable
from hpcbridge.model import State
from tests.adapters import RemoteHarness, VanishingHarness, finished, new_job_id


def test_status_of_a_hundred_jobs_costs_what_one_costs(remote_harness: RemoteHarness) -> None:
    adapter = remote_harness.adapter
    real = [adapter.submit(remote_harness.request(), new_job_id()) for _ in range(3)]
    hundred = real + [f"{remote_harness.unknown_id}{i}" for i in range(97)]
    for native_id in real:
        finished(adapter, native_id, remote_harness.wait_s)

    before = remote_harness.calls()
    adapter.status_many(real[:1])
    one = remote_harness.calls() - before
    before = remote_harness.calls()
    answer = adapter.status_many(hundred)
    many = remote_harness.calls() - before

    assert set(answer) == set(real)
    assert many == one <= 2, f"{one} request(s) for 1 job, {many} for 100"
    print(f"\n{adapter.kind}: {many} request(s) to the manager for status of 100 jobs")


def test_an_unreachable_manager_is_a_transient_error(remote_harness: RemoteHarness) -> None:
    adapter = remote_harness.unreachable()
    try:
        with pytest.raises(ManagerUnavailable):
            adapter.submit(remote_harness.request(), new_job_id())
        with pytest.raises(ManagerUnavailable):
            adapter.status_many([remote_harness.unknown_id])
        with pytest.raises(ManagerUnavailable):
            adapter.cancel(remote_harness.unknown_id)
    finally:
        adapter.close()


def test_refused_credentials_are_a_clear_error_that_never_shows_them(
        remote_harness: RemoteHarness) -> None:
    adapter, secret = remote_harness.with_bad_credentials()
    try:
        for call in (lambda: adapter.submit(remote_harness.request(), new_job_id()),
                     lambda: adapter.status_many([remote_harness.unknown_id])):
            with pytest.raises(AuthenticationFailed) as refused:
                call()
            assert secret not in str(refused.value)
            assert str(refused.value), "the error says what to fix"
    finally:
        adapter.close()


def test_a_vanished_job_is_absent_and_not_found(vanishing_harness: VanishingHarness) -> None:
    adapter = vanishing_harness.adapter
    job_id = new_job_id()
    native_id = adapter.submit(vanishing_harness.request(), job_id)
    assert finished(adapter, native_id, vanishing_harness.wait_s).state is State.SUCCEEDED

    vanishing_harness.vanish(native_id)

    assert native_id not in adapter.status_many([native_id])
    assert adapter.find_by_tag(job_id) is None
