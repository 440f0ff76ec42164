"""The US AQI categories (EPA), in order of severity.

The warehouse names a reading's category in SQL (``dbt_project/macros/aqi.sql``,
``aqi_category``); the alert step (:mod:`aqi.aqi_alerts`) compares categories by their rank
here. tests/unit/test_aqi_alert_rules.py holds the two lists equal.

Public surface: :data:`AQI_CATEGORIES`, :data:`DEFAULT_ALERT_CATEGORY`, :func:`rank`.
"""

from __future__ import annotations

__all__ = ["AQI_CATEGORIES", "DEFAULT_ALERT_CATEGORY", "rank"]

#: EPA's six categories, least to most severe (AQI 0-50, 51-100, ..., 301-500)
AQI_CATEGORIES: tuple[str, ...] = (
    "Good",
    "Moderate",
    "Unhealthy for Sensitive Groups",
    "Unhealthy",
    "Very Unhealthy",
    "Hazardous",
)
#: the category from which an episode opens unless AQ_AQI_ALERT_CATEGORY says otherwise
DEFAULT_ALERT_CATEGORY = "Unhealthy"


def rank(category: str) -> int:
    """0 for Good ... 5 for Hazardous; ``ValueError`` for anything else."""
    return AQI_CATEGORIES.index(category)
