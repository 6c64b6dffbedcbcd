"""Offline evaluation: ISO/IEC 30107-3 metrics (``metrics``), datasets (``dataset``),
scoring and reports (``report``), the fusion comparison (``fusion``) and ``edge eval`` (``cli``).

A scorer is any callable ``score_item(path) -> ItemResult``; the runtime's is
``edge.pipeline.make_scorer(config)``.
"""

from edge.eval.report import ItemResult, Scorer

__all__ = ["ItemResult", "Scorer"]
