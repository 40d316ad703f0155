"""Slices in sevenths of a GPU, and quotas whose refusals name the numbers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device, instance

from sandman.gpu.catalogue import resolve_model
from sandman.gpu.types import GpuRequest
from sandman.policy.quotas import Ask, Priority, Quota, Usage, check
from sandman.policy.units import grant_slices, profile_slices, request_slices


def test_slices_follow_compute_share() -> None:
    a100 = resolve_model("A100-40GB")
    assert [profile_slices(a100, p) for p in ("1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb")] == [
        1,
        2,
        3,
        7,
    ]
    a30 = resolve_model("A30-24GB")
    assert profile_slices(a30, "1g.6gb") == 1.75
    assert profile_slices(a30, "4g.24gb") == 7
    assert grant_slices("A100-40GB", None) == 7
    assert grant_slices(None, None, share=0.25) == 1.75


def test_a_request_counts_what_it_would_get_here() -> None:
    devices = [device(0, "A100-40GB")]
    assert request_slices(GpuRequest(mig_profile="3g.20gb"), devices) == 3
    assert request_slices(GpuRequest(gpu_count=2), devices) == 14
    assert request_slices(GpuRequest(gpu_count=0), devices) == 0
    assert request_slices(GpuRequest(gpu_memory_gb=9), devices) == 1  # 1g.10gb
    made = instance("A100-40GB", "2g.10gb", 0, 1)
    static = [device(0, "A100-40GB", instances=(made,))]
    assert request_slices(GpuRequest(mig_instance_uuid=made.uuid), static) == 2


def test_refusals_name_the_quota_and_the_numbers() -> None:
    quota = Quota(max_slices=14, max_sessions=3, max_ttl_minutes=120)
    found = check("team vision", quota, Usage(sessions=1, slices=12), Ask(3, 60))
    assert [v.quota for v in found] == ["max_slices"]
    assert found[0].message == (
        "team vision: uses 12 of 14 slices; this request needs 3 (max_slices)"
    )
    assert found[0].waitable
    too_big = check("team vision", quota, Usage(), Ask(21, 60))
    assert not too_big[0].waitable  # no amount of waiting makes 21 fit in 14
    long = check("user ria", quota, Usage(), Ask(1, 600))
    assert [v.quota for v in long] == ["max_ttl_minutes"] and not long[0].waitable


def test_allowed_sets_and_strictest_merge() -> None:
    team = Quota(allowed_profiles=frozenset({"1g.5gb", "2g.10gb"}), max_slices=10)
    user = Quota(allowed_profiles=frozenset({"2g.10gb", "3g.20gb"}), max_slices=4)
    both = team.merged(user)
    assert both.allowed_profiles == {"2g.10gb"} and both.max_slices == 4
    found = check("user ria", both, Usage(), Ask(1, 60, profile="1g.5gb"))
    assert found[0].message == "user ria: allows 2g.10gb, not 1g.5gb (allowed_profiles)"
    high = check("user ria", Quota(allowed_priorities=frozenset({"normal"})), Usage(),
                 Ask(1, 60, Priority.HIGH))  # fmt: skip
    assert [v.quota for v in high] == ["allowed_priorities"]
    assert Quota(max_sessions=None).over(Quota(max_sessions=2)).max_sessions == 2


limits = st.one_of(st.none(), st.integers(0, 30))


@given(
    max_slices=limits,
    max_sessions=limits,
    held=st.integers(0, 30),
    sessions=st.integers(0, 10),
    need=st.integers(0, 14),
)
def test_an_admitted_request_never_exceeds_a_quota(
    max_slices: int | None, max_sessions: int | None, held: int, sessions: int, need: int
) -> None:
    quota = Quota(max_slices=max_slices, max_sessions=max_sessions)
    if not check("team t", quota, Usage(sessions=sessions, slices=held), Ask(need, 60)):
        assert max_slices is None or held + need <= max_slices
        assert max_sessions is None or sessions + 1 <= max_sessions
