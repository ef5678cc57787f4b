"""Deliveries in and out: the acknowledging ``POST /webhook``, the worker that claims
and handles them, the router and its handlers (one router per feature), healing
(reconcile, recover), and the process-wide runtime."""
