"""UsageError, kept importable from here while branches written before `classifier.errors` merge.

New code imports it from `classifier.errors`.
"""

from classifier.errors import UsageError

__all__ = ["UsageError"]
