"""Fault points: places where a test may kill the process to prove nothing is lost.

Enabled only by ``HPCBRIDGE_FAULT=<point>`` in the environment of a test's process;
without it a fault point is one dictionary look-up.
"""

from __future__ import annotations

import os

__all__ = ["fault_point"]


def fault_point(name: str) -> None:
    """Die at once, as a killed pod would, if the test setting names this point."""
    if os.environ.get("HPCBRIDGE_FAULT") == name:
        os._exit(137)
