"""Every notebook runs as one test, and the package must agree with the notebooks."""
import os, subprocess, sys
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
BIN = Path(sys.executable).parent

def _status(): return subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True).stdout

def test_package_matches_notebooks():
    "nbdev-export and nbdev-clean change no tracked file: notebooks and package have not drifted"
    before = subprocess.run(['git', 'diff', '--stat'], cwd=ROOT, capture_output=True, text=True).stdout
    for cmd in ('nbdev-export', 'nbdev-clean'):
        subprocess.run([str(BIN/cmd)], cwd=ROOT, check=True, capture_output=True)
    after = subprocess.run(['git', 'diff', '--stat'], cwd=ROOT, capture_output=True, text=True).stdout
    assert before == after, f"notebooks and package drifted; run `make export` and commit:\n{after}"

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    "The notebook runs top to bottom (cells flagged gpu/modal/slow are skipped)"
    cwd = os.getcwd()
    try:
        os.chdir(nb.parent)
        ok, secs = run_notebook(str(nb), skip_flags=['gpu', 'modal', 'slow'], force_flags=[], do_print=False)
    finally: os.chdir(cwd)
    assert ok, f"{nb.name} failed"
