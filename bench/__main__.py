"""``python -m bench``: every benchmark, one after the other; writes docs/benchmarks.md.

    python -m bench                       all four, then the report and its plots
    python -m bench latency cold_start    only these (the report is not rewritten)
    python -m bench --report FILE.json    rewrite the report from a saved run

Every run saves its raw results as JSON (the path is printed). A benchmark that fails is
reported as failed; the others still run. Each starts and stops its own servers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import cold_start, latency, poll_scaling, report, submit_rate

#: In this order: cold start first, on a machine not yet loaded by the others' daemons.
BENCHMARKS = {
    "cold_start": (cold_start, cold_start.lines),
    "poll_scaling": (poll_scaling, lambda r: [poll_scaling.describe(r), "",
                                              poll_scaling.table(r), "",
                                              poll_scaling.comparison(r)]),
    "latency": (latency, latency.lines),
    "submit_rate": (submit_rate, submit_rate.lines),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--report", metavar="FILE", type=Path,
                        help="rewrite docs/benchmarks.md from a saved run, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        for path in report.write(saved["results"], saved["info"]):
            print(f"wrote {path}")
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)
    info = report.machine()
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name in names:
        module, lines = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        load = os.getloadavg()[0]
        try:
            results[name] = module.run()
            for line in lines(results[name]):
                print(line)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}",
                             "runtime_s": time.monotonic() - t0}
        results[name]["load"] = [load, os.getloadavg()[0]]
        print(f"== {name}: {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    info["runtime_s"] = time.monotonic() - started
    info["load_end"] = os.getloadavg()
    saved = Path(tempfile.gettempdir()) / "hpc-bridge-bench.json"
    saved.write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    print(f"raw results: {saved}")
    if set(names) == set(BENCHMARKS):
        for path in report.write(results, info):
            print(f"wrote {path}")
    print(f"total {info['runtime_s'] / 60:.1f} min")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
