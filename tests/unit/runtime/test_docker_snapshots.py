"""What a Docker snapshot's commit changes: its labels, and the session's own
environment blanked so that a restored session never inherits it."""

from __future__ import annotations

from sandman.runtime.docker.backend import SESSION_ENV_LABEL, snapshot_changes

IMAGE_ENV = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]


def test_the_sessions_own_variables_are_blanked_and_listed() -> None:
    container = [
        *IMAGE_ENV,
        "SANDMAN_SESSION_ID=abc",
        "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps",
        "SANDMAN_MIG_PROFILE=1g.5gb",
    ]
    changes = snapshot_changes(container, IMAGE_ENV, "", {"sandman.snapshot": "true"})
    assert changes == [
        'ENV CUDA_MPS_PIPE_DIRECTORY=""',
        'ENV SANDMAN_MIG_PROFILE=""',
        'ENV SANDMAN_SESSION_ID=""',
        f'LABEL "{SESSION_ENV_LABEL}"="CUDA_MPS_PIPE_DIRECTORY,SANDMAN_MIG_PROFILE,'
        'SANDMAN_SESSION_ID"',
        'LABEL "sandman.snapshot"="true"',
    ]
    assert not any("PATH" in c or "LANG" in c for c in changes)


def test_a_chain_keeps_blanking_what_an_earlier_snapshot_blanked() -> None:
    # A session started from a snapshot: its image already has the keys (blank), and
    # this session set some of them again; they are still the session's own.
    image = [*IMAGE_ENV, "SANDMAN_SESSION_ID=", "SANDMAN_MIG_PROFILE="]
    container = [*IMAGE_ENV, "SANDMAN_SESSION_ID=def", "SANDMAN_MIG_PROFILE=3g.20gb"]
    changes = snapshot_changes(container, image, "SANDMAN_MIG_PROFILE,SANDMAN_SESSION_ID", {})
    assert 'ENV SANDMAN_MIG_PROFILE=""' in changes
    assert 'ENV SANDMAN_SESSION_ID=""' in changes
    assert changes[-1] == f'LABEL "{SESSION_ENV_LABEL}"="SANDMAN_MIG_PROFILE,SANDMAN_SESSION_ID"'
