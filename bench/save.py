"""Where the benchmarks keep what they measured: bench/results/<name>-<time>.json (not committed).

Imports nothing heavy, so a benchmark that only starts digitnet processes stays light itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, results: dict) -> Path:
    """Write `results` to bench/results/<name>-<time>.json; return its path."""
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out
