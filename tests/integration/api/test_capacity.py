"""The capacity view and the layout advice on a real server with a real container:
one A100-40GB made of seven static 1g.5gb instances, where 3g requests are refused
or wait; the view shows that demand and the advice names a layout with a 3g."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from tests.integration.support import TOKEN, Server

from sandman.gpu.catalogue import is_valid_layout


def test_refused_and_queued_demand_and_the_advice(server: Callable[..., Server]) -> None:
    sandman = server(gpu_topology="a100-40gb-7x1g")
    sandman.start()
    held = sandman.create("ca", mig_profile="1g.5gb", ttl_minutes=60)
    assert held.status_code == 201, held.text
    refused = sandman.create("cb", mig_profile="3g.20gb", ttl_minutes=120)
    assert refused.status_code == 503, refused.text
    queued = sandman.create("cc", mig_profile="3g.20gb", ttl_minutes=60, queue=True)
    assert queued.status_code == 202, queued.text

    view = sandman.get("/capacity?days=1")
    rows = {row["profile"]: row for row in view["profiles"]}
    assert rows["1g.5gb"]["capacity_instances"] == 7
    assert rows["1g.5gb"]["peak_slices"] == 1
    assert rows["1g.5gb"]["requests"] == {"started": 1, "queued": 0, "refused": 0}
    assert rows["3g.20gb"]["capacity_instances"] == 0
    assert rows["3g.20gb"]["requests"] == {"started": 0, "queued": 1, "refused": 1}
    assert rows["3g.20gb"]["asked_slice_hours"] == {"started": 0, "queued": 3, "refused": 6}
    [line] = view["advice"]
    assert line.startswith("A100-40GB x1 (static): the layout ")

    [advice] = sandman.get("/gpus/advice?days=1")["advice"]
    assert advice["current"] == "7x1g.5gb" and "3g.20gb" in advice["layout"]
    assert is_valid_layout("A100-40GB", [tuple(p) for p in advice["placements"]])
    assert advice["slice_hours"] > advice["current_slice_hours"] > 0
    assert advice["line"] == line

    cli = {**os.environ, "SANDMAN_URL": sandman.url, "SANDMAN_ADMIN_TOKEN": TOKEN}
    shown = subprocess.run(
        [sys.executable, "-m", "sandman.cli", "advice", "--days", "1"],
        env=cli, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown
    assert "3g.20gb" in shown.stdout and "today: 7x1g.5gb" in shown.stdout
