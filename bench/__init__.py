"""Jobstead's benchmark against pgqueuer and procrastinate on one PostgreSQL (``make bench``).

Runs from the repository root inside its own virtualenv (``.cache/bench-venv``)
so the peers never enter Jobstead's dependencies; nothing in ``runtime/``
imports this package. See bench/README.md.
"""
