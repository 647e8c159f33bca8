"""The whole `digitnet train` process a user waits for, this checkout against a baseline commit.

Issue #16's targets for the default config: wall time <= 2x the run's own train_seconds, and
peak memory <= 800 MB. Each round trains configs/default.yaml once with the baseline's digitnet
(extracted with `git archive`, run from this virtual environment) and once with this checkout's,
in alternating fresh processes so that both see the same load:

    DIGITNET_DATA_DIR=../shared/data/mnist .venv/bin/python bench/train_process.py \\
        [--baseline main] [--rounds 2] [--backend tensorflow|jax] [--own-config]

--own-config trains each side on its own commit's configs/default.yaml: the default recipe
then against the recipe of an older commit (issue #14's "<= 4 s of training" was measured
with c859f12's, 3.08 s on the machine of 2026-11-28; `--baseline c859f12 --own-config` gives
today's recipe as a ratio to it on whatever machine runs the bench).

For each process: wall seconds from start to exit, train_seconds from its metrics.json, their
ratio, peak memory (ru_maxrss of the process and its children, as `/usr/bin/time -v` reports
it) and CPU seconds (user and system, the process and its children); then baseline / this
checkout for each, as medians over the rounds. Other jobs on the machine inflate wall times, so
read the ratios; the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from save import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def extract(commit: str, target: Path) -> Path:
    """The digitnet package and configs of `commit`, unpacked under `target`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "digitnet", "configs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def train_once(code: Path, config: Path, backend: str, data_dir: str, workdir: Path) -> dict:
    """Train `config` with the digitnet under `code`; wall, train_seconds, peak MB."""
    run_dir = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    env = {**os.environ, "PYTHONPATH": str(code), "DIGITNET_RUNS_DIR": str(workdir)}
    # older commits have no --backend (nor -q): the option is passed only when it is needed
    backend_option = [] if backend == "tensorflow" else ["--backend", backend]
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "train", "--config", str(config), *backend_option,
         "--data-dir", data_dir, "--run-dir", str(run_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"digitnet train ({code}) failed:\n{output[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_seconds": wall, "train_seconds": metrics["train_seconds"],
            "wall_over_train": wall / metrics["train_seconds"],
            "peak_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
            # user + system time of the process and the children it waited for (the converter)
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "test_accuracy": metrics["test_accuracy"]}


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def report(results: dict) -> str:
    keys = ("wall_seconds", "train_seconds", "wall_over_train", "peak_mb", "cpu_seconds",
            "test_accuracy")
    configs = "each commit's own" if results["own_config"] else "this checkout's"
    lines = [f"digitnet train, {configs} configs/default.yaml, --backend {results['backend']}: "
             f"medians of "
             f"{results['rounds']} rounds; load average {results['load_average'][0]:.1f} at the "
             f"start (a loaded machine inflates the seconds: read the ratios)",
             f"{'':<28}" + "".join(f"{key:>17}" for key in keys)]
    for name in ("baseline", "current"):
        label = f"{name} ({results[name + '_commit']})"
        lines.append(f"{label:<28}" + "".join(f"{median(results[name], key):>17.3f}"
                                             for key in keys))
    lines.append(f"{'baseline / current':<28}" + "".join(
        f"{median(results['baseline'], key) / median(results['current'], key):>16.2f}x"
        for key in keys))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="commit to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA_DIR"))
    parser.add_argument("--own-config", action="store_true",
                        help="train the baseline on its own configs/default.yaml")
    args = parser.parse_args()
    if not args.data_dir:
        raise SystemExit("set DIGITNET_DATA_DIR or pass --data-dir")
    describe = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
    results = {"backend": args.backend, "rounds": args.rounds, "own_config": args.own_config,
               "load_average": os.getloadavg(),
               "baseline_commit": subprocess.run(
                   ["git", "-C", str(REPO), "rev-parse", "--short", args.baseline],
                   capture_output=True, text=True, check=True).stdout.strip(),
               "current_commit": subprocess.run(describe, capture_output=True, text=True,
                                                check=True).stdout.strip(),
               "baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="digitnet-train-process-") as scratch:
        scratch = Path(scratch)
        (scratch / "baseline-code").mkdir()
        baseline = extract(args.baseline, scratch / "baseline-code")
        config = "configs/default.yaml"
        sides = (("baseline", baseline, (baseline if args.own_config else REPO) / config),
                 ("current", REPO, REPO / config))
        for _ in range(args.rounds):
            for name, code, config_file in sides:
                row = train_once(code, config_file, args.backend, args.data_dir, scratch)
                results[name].append(row)
                print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
                      flush=True)
    results["load_average_end"] = os.getloadavg()
    print(report(results))
    print(f"load average at the end {results['load_average_end'][0]:.1f}")
    print(f"Results written to {write_results('train-process', results)}")


if __name__ == "__main__":
    main()
