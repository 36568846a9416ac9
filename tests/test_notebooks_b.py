"""The second half of the notebooks (see `test_notebooks.py`), in a file of its own so that the other worker runs it."""
import pytest
from test_notebooks import NBS, SECOND, run_nb

LATER = [p for p in NBS if p.stem in SECOND]

def test_second_half_exists():
    "Every name in SECOND is a notebook, so none is silently left out"
    assert sorted(p.stem for p in LATER) == sorted(SECOND)

@pytest.mark.parametrize('nb', LATER, ids=[p.stem for p in LATER])
def test_notebook(nb):
    "The notebook runs top to bottom (cells flagged gpu/modal/slow are skipped)"
    run_nb(nb)
