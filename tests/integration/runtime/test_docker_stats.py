"""``stats`` on the Docker runtime: a session's CPU time as the engine counts it,
and the collector turning two readings into the session's activity."""

from __future__ import annotations

import time

from tests.integration.conftest import Harness


def test_a_busy_session_uses_cpu_time_and_its_simulated_gpu_follows(harness: Harness) -> None:
    response = harness.create("statsuser")
    assert response.status_code == 201, response.text
    session_id = response.json()["session_id"]
    runtime = harness.core.runtime
    (container,) = harness.containers()
    user = container.attrs["Config"]["User"]

    before = runtime.stats(container.id)
    assert before is not None and before.cpu_seconds > 0
    harness.core.collector.collect()  # the first reading
    burn = "timeout 3 sh -c 'while :; do :; done'; true"
    assert runtime.exec(container.id, ["sh", "-c", burn], user, 20).exit_code == 0
    after = runtime.stats(container.id)
    assert after is not None and after.cpu_seconds - before.cpu_seconds > 1.5

    snapshot = harness.core.collector.collect()
    activity = snapshot.sessions[session_id]
    assert activity.cpu_percent is not None and activity.cpu_percent > 20
    assert activity.gpu_active is not None and activity.gpu_active > 0.2
    (holder,) = snapshot.holders
    assert holder.devices[0].mig_profile == "1g.5gb"

    time.sleep(2)  # quiet now
    quiet = harness.core.collector.collect().sessions[session_id]
    assert quiet.cpu_percent is not None and quiet.cpu_percent < 20

    harness.client.delete(f"/api/v1/sessions/{session_id}", headers=harness.headers)
    assert runtime.stats(container.id) is None
