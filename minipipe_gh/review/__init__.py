"""The review workflow: what a delivery's facts do to sessions and patches, the one
decision function every surface calls (``decisions.decide``), and the check-run
refresh. It reads GitHub through ``gh`` and writes it only as effects."""
