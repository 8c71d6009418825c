"""ondeck: serve a model, move traffic to a new version step by step, watch it, roll back on its own.

The import root is ``ondeck``; ``ondeck.serving`` (data plane) and ``ondeck.operator`` (control
plane) live in the source tree's ``serving/`` and ``operator/`` folders.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# From a source tree (or an editable install) serving/ and operator/ sit beside this folder;
# an installed wheel puts them inside it. Extending the package path makes both layouts import
# the same way without a second copy of the code.
_here = _os.path.dirname(_os.path.abspath(__file__))
_tree = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "serving")) and _os.path.isdir(_os.path.join(_tree, "serving")):
    __path__.append(_tree)  # type: ignore[name-defined]  # noqa: F821


def load(path, **kwargs):
    """Load a model package directory for in-process prediction (see :class:`ondeck.package.load.Model`)."""
    from ondeck.package.load import load as _load

    return _load(path, **kwargs)


__all__ = ["load", "__version__"]
