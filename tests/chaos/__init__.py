"""The chaos run of issue 13: ``make chaos`` (``python -m tests.chaos``), and a short version in ``make test``."""
