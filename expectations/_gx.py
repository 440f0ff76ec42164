"""The one place that imports Great Expectations, so every module gets it the same way.

Why not a plain ``import great_expectations``:

- ``GX_ANALYTICS_ENABLED`` is read when GX is imported; it must be ``false`` before that, or
  GX tries to send usage statistics (there is no internet, and we do not want it anyway).
- GX imports pyspark when it is installed (it is: ``aqi stream``). pyspark's Spark Connect
  module calls ``sys.exit(0)`` on import when the main module has neither a ``__spec__`` nor
  a ``__file__`` (``python -c ...``, ``python - <<EOF``): it believes it runs doctests. The
  process would end silently with status 0 - a passed quality gate that never ran. Giving
  ``__main__`` a ``__file__`` for the duration of the import avoids it.
- pyspark warns about pandas 3 on import; that warning says nothing about our checks.

Importing GX takes several seconds (pandas, scipy, altair, pyspark): import this module
lazily, where checks are actually run.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ["GX_ANALYTICS_ENABLED"] = "false"

_main = sys.modules.get("__main__")
_guard = (
    _main is not None
    and getattr(_main, "__spec__", None) is None
    and not hasattr(_main, "__file__")
    and not hasattr(sys, "ps1")
)
if _guard:
    _main.__file__ = "<string>"  # type: ignore[union-attr]
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations as gxe
finally:
    if _guard:
        del _main.__file__  # type: ignore[union-attr]

__all__ = ["gx", "gxe"]
