"""benchmarks/paired_graphs.py: it builds the same graphs from another revision and says whether they agree.

Run on the project's own detector (committed, no ../shared needed) against HEAD, a few timing runs:
the committed tree's graphs are this checkout's wherever the graph code has no uncommitted change.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import paired_graphs  # noqa: E402


def _git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "true"


def _graph_code_committed() -> bool:
    done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "calib", "onnx_ops"],
                          capture_output=True, text=True)
    return done.returncode == 0 and not done.stdout.strip()


needs_git = pytest.mark.skipif(not _git_checkout(), reason="needs git and a git checkout of the repository")


@needs_git
def test_against_head_builds_the_same_graphs_and_times_them(capsys):
    if not _graph_code_committed():
        pytest.skip("calib/ or onnx_ops/ have uncommitted changes: HEAD's graphs may differ from this checkout's")
    assert paired_graphs.main(["--base", "HEAD", "--model", "project-cls", "--maps", "id,box",
                               "--runs", "5", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    for m in ("id", "box"):
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{m} ") and "nodes" in x)
        n_base, n_this = line.split("nodes")[1].split(";")[0].split("->")
        assert int(n_base) == int(n_this) > 20
        assert line.endswith("outputs: same bits")
    assert out.count("paired this/base") == 2
    assert "box/id paired: base" in out
    listed = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "detcal-paired-" not in listed              # the temporary worktree is gone


@needs_git
def test_unknown_revision_is_one_clear_error():
    with pytest.raises(SystemExit, match="cannot check out 'no-such-revision-xyz'"):
        paired_graphs.main(["--base", "no-such-revision-xyz", "--model", "project-cls", "--maps", "id", "--runs", "1",
                            "--reps", "1"])


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        paired_graphs.main(["--maps", "id,nope"])
    assert e.value.code == 2
    assert "--maps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired_graphs.main(["--batch", "3"])
    assert "--batch must divide 40" in capsys.readouterr().err


def test_agreement_reports_what_differs():
    import numpy as np

    a = [[np.array([2]), np.zeros((1, 4, 4)), np.array([[0.5, 0.25, 0, 0]], np.float32), np.zeros((1, 4))]]
    same = [[x.copy() for x in a[0]]]
    assert paired_graphs.agreement(a, same) == "same bits"
    moved = [[a[0][0], a[0][1], a[0][2] + np.float32(1e-6), a[0][3]]]
    line = paired_graphs.agreement(a, moved)
    assert line.startswith("differ: detection counts equal, largest score difference ")
    assert 5e-7 < float(line.rsplit(" ", 1)[1]) < 2e-6
    fewer = [[np.array([1]), a[0][1], a[0][2], a[0][3]]]
    assert "DIFFER" in paired_graphs.agreement(a, fewer)
