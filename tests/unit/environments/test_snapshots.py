"""The pure decisions about writable-layer snapshots: names, the size limit, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sandman.config import Settings
from sandman.environments.snapshots import (
    MAX_DEPTH,
    Kept,
    Retention,
    decide_size,
    image_name,
    is_ours,
    owned_by,
    parse_image_name,
    parse_retention,
    snapshot_labels,
    to_prune,
)

SID = "0b6f5a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
GIB = 1024**3


def test_an_image_name_names_its_user_and_session_and_only_that_user_owns_it() -> None:
    name = image_name("sandman", "ann_b-2", SID)
    assert name == f"sandman-snapshots:ann_b-2.{SID}"
    assert parse_image_name("sandman", name) == ("ann_b-2", SID)
    assert owned_by("sandman", name, "ann_b-2")
    assert not owned_by("sandman", name, "ann")
    assert not owned_by("other", name, "ann_b-2")  # another deployment's prefix


@pytest.mark.parametrize(
    "image",
    [
        "sandman-workspace:latest",
        f"sandman-snapshots:ann.{SID}extra",
        f"sandman-snapshots:Ann.{SID}",
        "sandman-snapshots:ann.not-a-session",
        f"registry.example/sandman-snapshots:ann.{SID}",
        f"sandman-snapshots:ann..{SID}",
        f"sandman-snapshots:ann.{SID}@sha256:00",
        "sandman-snapshots",
    ],
)
def test_names_sandman_would_not_make_are_not_snapshots(image: str) -> None:
    assert parse_image_name("sandman", image) is None
    assert not owned_by("sandman", image, "ann")


@given(st.text(max_size=120))
def test_no_string_is_owned_by_a_user_it_does_not_name(image: str) -> None:
    parsed = parse_image_name("sandman", image)
    if parsed is not None:
        assert image == image_name("sandman", *parsed)
        assert not owned_by("sandman", image, parsed[0] + "x")


def test_labels_must_all_match_for_an_image_to_be_ours() -> None:
    labels = snapshot_labels("dep1", "ann", SID)
    assert is_ours(labels, "dep1", "ann")
    assert not is_ours(labels, "dep2", "ann")
    assert not is_ours(labels, "dep1", "ben")
    assert not is_ours({**labels, "sandman.snapshot": "false"}, "dep1", "ann")
    assert not is_ours(None, "dep1", "ann")
    assert not is_ours({}, "dep1", "ann")


def test_a_layer_within_the_limit_is_kept() -> None:
    decision = decide_size(100 * 1024**2, 0, 0, 2 * GIB)
    assert decision.keep and decision.size_bytes == 100 * 1024**2 and decision.reason is None


def test_a_layer_over_the_limit_is_skipped_with_its_size_and_the_limit() -> None:
    decision = decide_size(3 * GIB, 0, 0, 2 * GIB)
    assert not decision.keep
    assert decision.reason is not None
    assert "3G" in decision.reason and "SANDMAN_SNAPSHOT_MAX_SIZE (2G)" in decision.reason


def test_the_limit_counts_the_snapshot_the_session_started_from() -> None:
    assert decide_size(GIB, GIB, 1, 2 * GIB).keep  # exactly at the limit
    over = decide_size(GIB + 1, GIB, 1, 2 * GIB)
    assert not over.keep and over.size_bytes == 2 * GIB + 1
    assert over.reason is not None and "the snapshot it started from (1G)" in over.reason


def test_an_unmeasured_layer_or_a_chain_too_deep_is_skipped() -> None:
    unknown = decide_size(None, 0, 0, GIB)
    assert not unknown.keep and unknown.reason is not None and "size" in unknown.reason
    assert decide_size(1, 0, MAX_DEPTH - 1, GIB).keep
    deep = decide_size(1, 0, MAX_DEPTH, GIB)
    assert not deep.keep and deep.reason is not None and "without restore" in deep.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", Retention(3, None)),
        ("30d", Retention(None, timedelta(days=30))),
        ("3,30d", Retention(3, timedelta(days=30))),
        (" 12h , 1 ", Retention(1, timedelta(hours=12))),
        ("2w", Retention(None, timedelta(weeks=2))),
    ],
)
def test_retention_reads_a_count_an_age_or_both(text: str, expected: Retention) -> None:
    assert parse_retention(text) == expected


@pytest.mark.parametrize("text", ["", "0", "3,4", "1d,2d", "forever", "3m", "-1", "0d"])
def test_retention_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="retention"):
        parse_retention(text)


def kept(*ages_days: float) -> list[Kept]:
    return [Kept(f"s{i}", NOW - timedelta(days=age)) for i, age in enumerate(ages_days)]


def test_retention_keeps_the_newest_count() -> None:
    snaps = kept(5, 1, 3, 2)  # s1 newest, then s3, s2, s0
    assert sorted(to_prune(snaps, Retention(2, None), NOW)) == ["s0", "s2"]
    assert to_prune(snaps, Retention(4, None), NOW) == []


def test_retention_drops_what_is_too_old_and_either_rule_suffices() -> None:
    snaps = kept(40, 1, 31, 2)
    assert sorted(to_prune(snaps, Retention(None, timedelta(days=30)), NOW)) == ["s0", "s2"]
    assert sorted(to_prune(snaps, Retention(1, timedelta(days=30)), NOW)) == ["s0", "s2", "s3"]


def test_a_snapshot_in_use_stays_whatever_the_rules_say() -> None:
    snaps = kept(40, 1)
    assert to_prune(snaps, Retention(1, timedelta(days=30)), NOW, frozenset({"s0"})) == []


@given(
    st.lists(st.floats(min_value=0, max_value=100), max_size=20),
    st.integers(min_value=1, max_value=10),
)
def test_retention_never_keeps_more_than_its_count(ages: list[float], count: int) -> None:
    snaps = kept(*ages)
    pruned = to_prune(snaps, Retention(count, None), NOW)
    assert len(snaps) - len(pruned) == min(count, len(snaps))
    survivors = [s for s in snaps if s.session_id not in pruned]
    assert all(
        s.created_at >= p.created_at for s in survivors for p in snaps if p.session_id in pruned
    )


def test_the_settings_read_the_limit_and_refuse_a_retention_they_cannot_read(
    tmp_path: Path,
) -> None:
    on = Settings(data_dir=tmp_path, snapshot_max_size="2g", snapshot_retention="5, 7d")
    assert on.snapshot_max_size == 2 * GIB and on.snapshot_retention == "5, 7d"
    off = Settings(data_dir=tmp_path, snapshot_max_size="0")
    assert off.snapshot_max_size is None and Settings(data_dir=tmp_path).snapshot_max_size is None
    with pytest.raises(ValidationError, match="neither a count"):
        Settings(data_dir=tmp_path, snapshot_retention="forever")
