"""The docs site builds offline (`site`, which `test_browser.py` renders page by page in Chromium), and the README it
regenerates has no nested links."""
import re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')/'_docs'
    subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), str(out)], cwd=ROOT, check=True, capture_output=True)
    return out

def expected_pages():
    nbs = sorted(p.stem for p in (ROOT/'nbs').glob('*.ipynb'))
    return nbs

def test_readme_has_no_nested_links():
    "nbdev links backticked names inside links the author wrote; the build unnests them, so README shows one link each"
    import importlib.util
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
    bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)
    assert bd.unnest_links('([[`A.b`](https://h/c.html#a.b)](https://h/c.html#a.b))') == '([`A.b`](https://h/c.html#a.b))'
    nested = re.findall(r'\[\[[^\[\]]+\]\([^()\s]+\)\]\([^()\s]+\)', (ROOT/'README.md').read_text())
    assert not nested, nested
