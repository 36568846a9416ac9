"""Every notebook runs as one test, and the package must agree with the notebooks."""
import filecmp, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
BIN = Path(sys.executable).parent

def repo_copy(dest:Path)->Path:
    "The repository's files (tracked, and untracked but not ignored) copied to `dest`"
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split('\0')
    for f in filter(None, files):
        if (ROOT/f).is_file(): (dest/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, dest/f)
    return dest

def test_package_matches_notebooks(tmp_path):
    "nbdev-export and nbdev-clean, run on a copy of the repository, change no file: notebooks and package have not drifted"
    copy = repo_copy(tmp_path/'repo')   # a copy, so the notebooks running beside this test never see a file mid-write
    for cmd in ('nbdev-export', 'nbdev-clean'):
        subprocess.run([str(BIN/cmd)], cwd=copy, check=True, capture_output=True)
    changed = [str(f.relative_to(copy)) for d in ('nbs', 'moe_router') for f in sorted((copy/d).rglob('*'))
               if f.is_file() and '__pycache__' not in f.parts
               and not ((ROOT/f.relative_to(copy)).is_file() and filecmp.cmp(f, ROOT/f.relative_to(copy), shallow=False))]
    assert not changed, f"notebooks and package drifted; run `make export` and commit: {changed}"

# One class per notebook: under `--dist loadscope` (the Makefile's) every other test file runs whole on one worker, so its
# fixtures are built once and its summary counts all its cases, while each notebook is a scope of its own and the notebooks
# spread over both workers as they free up.
def _notebook_class(nb:Path)->type:
    def test_notebook(self): run_nb(nb)
    test_notebook.__doc__ = f"{nb.name} runs top to bottom (cells flagged gpu/modal/slow are skipped)"
    return type(f'TestNotebook_{nb.stem}', (), dict(test_notebook=test_notebook, __doc__=f"The notebook {nb.name}"))

for _nb in NBS: globals()[f'TestNotebook_{_nb.stem}'] = _notebook_class(_nb)

def test_every_notebook_is_tested():
    "A class per notebook, so none is silently left out"
    assert sorted(k[len('TestNotebook_'):] for k in globals() if k.startswith('TestNotebook_')) == sorted(p.stem for p in NBS)

def run_nb(nb:Path):
    "Run notebook `nb` with nbdev's runner, from its folder, skipping cells flagged gpu/modal/slow"
    cwd = os.getcwd()
    try:
        os.chdir(nb.parent)
        ok, secs = run_notebook(str(nb), skip_flags=['gpu', 'modal', 'slow'], force_flags=[], do_print=False)
    finally: os.chdir(cwd)
    assert ok, f"{nb.name} failed"
