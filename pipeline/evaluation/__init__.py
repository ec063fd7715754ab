"""Judging results: metrics of a stylized video, comparisons of methods, the report, statistics and
benchmark helpers (``docs/architecture.md``)."""
