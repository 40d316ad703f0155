"""Observing what runs: GPU and session samples, the collector that takes them,
``/metrics`` in Prometheus' text format, and a compact history of one-minute
averages for the pages that draw it."""
