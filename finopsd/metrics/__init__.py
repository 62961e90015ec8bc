"""Prometheus metrics: a hook that counts each exchange, scrape-time gauges, and ``GET /metrics``.

``families`` defines every metric on a registry of the app's own; ``hook`` is the hook in
``Runtime.hooks`` that updates them once per exchange (its ``post``), with every label bounded
by the config; ``state`` reads the gauges that already live elsewhere (log queue, budgets) at
scrape time, so they cost the hot path nothing; ``endpoint`` wires them and answers
``GET /metrics``.
"""
