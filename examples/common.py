"""Helpers the runnable examples share: printing and running `detcal` commands, the seeded data set."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


class ExampleError(RuntimeError):
    """A missing input or a failed step: the example prints one line and exits with code 2."""


def show(path: Path) -> str:
    """A path as the user would type it: relative to the current folder where possible."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def detcal(args: list, *, in_process: bool = False) -> None:
    """Print `detcal ARGS`, then run it (a subprocess of this Python, or calib.cli.main in-process)."""
    args = [str(a) for a in args]
    print(f"\n$ detcal {' '.join(shlex.quote(a) for a in args)}", flush=True)
    if in_process:
        from calib.cli import main as cli_main
        rc = cli_main(args)
    else:
        rc = subprocess.call([sys.executable, "-m", "calib.cli", *args], cwd=os.getcwd())
    if rc != 0:
        raise ExampleError(f"`detcal {args[0]}` failed with exit status {rc}")


def make_data(out: Path, val, test, seed: int) -> Path:
    """Write (or reuse, when the seed and sizes match) the deployment data set under out/data; returns data.yaml."""
    from examples.detector.scenes import write_dataset

    spec = {"seed": seed, "val": list(val), "test": list(test)}
    stamp, data = out / "data" / "detcal_example_stamp.json", out / "data" / "data.yaml"
    if stamp.exists() and data.exists() and json.loads(stamp.read_text()) == spec:
        print(f"data: {show(data)} (reused: same seed and sizes)")
        return data
    t0 = time.perf_counter()
    data = write_dataset(out / "data", n_val_pos=val[0], n_val_neg=val[1], n_test_pos=test[0], n_test_neg=test[1],
                         seed=seed)
    stamp.write_text(json.dumps(spec) + "\n")
    print(f"data: wrote {show(data)}: val {val[0]}+{val[1]}, test {test[0]}+{test[1]} (positive+negative), "
          f"seed {seed} ({time.perf_counter() - t0:.1f}s)")
    if not data.exists():
        raise ExampleError(f"the data set YAML is missing: {data}")
    return data
