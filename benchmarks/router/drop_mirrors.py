"""`ondeck route` whose shadow drops every mirror as it is offered (counted as dropped): a control for breakdown.py.

It chooses and builds each mirror as the real shadow does and stops there, before handing it to the shadow
process, so it measures what mirroring costs on the client's path alone, without the hand-over, the shadow
process, the shadow server or the comparisons. Not for use outside the
benchmark: a router run this way never compares anything.
"""
from __future__ import annotations

import sys

from ondeck.serving.router import shadow_process


def _drop(self, routes, primary, job) -> None:
    self.metrics.shadow(primary, routes.config.shadow.variant, "dropped")


shadow_process.ShadowProcess.offer = _drop

if __name__ == "__main__":
    from ondeck.cli import main

    sys.exit(main(["route", *sys.argv[1:]]))
