"""Wall time of the CLI as a user starts it: fresh processes, against ``python -c "import torch"``.

Prints the median wall time of each command over ``--repeats`` fresh processes, interleaved so
that load on the machine hits all of them alike, and the two ratios the goal is stated in
(goal: both <= 0.5).

    python benchmarks/cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "medfoundry --help": [sys.executable, "-m", "medfoundry", "--help"],
    "medfoundry register --help": [sys.executable, "-m", "medfoundry", "register", "--help"],
}


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("medfoundry")
    if exe and os.path.dirname(exe) == os.path.dirname(sys.executable):
        # The console script is what users type; time it rather than `python -m`.
        COMMANDS["medfoundry --help"] = [exe, "--help"]
        COMMANDS["medfoundry register --help"] = [exe, "register", "--help"]
    for cmd in COMMANDS.values():  # warm the page cache once
        _wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(_wall(cmd))
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, value in med.items():
        print(f"{name:30s} median {value:6.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    base = med["import torch"]
    print(f"ratio medfoundry --help / import torch:          {med['medfoundry --help'] / base:.2f} (goal <= 0.5)")
    print(f"ratio medfoundry register --help / import torch: {med['medfoundry register --help'] / base:.2f} (goal <= 0.5)")


if __name__ == "__main__":
    main()
