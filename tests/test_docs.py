"""The docs site builds offline and every page renders in headless Chromium."""
import base64, io, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')/'_docs'
    subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), str(out)], cwd=ROOT, check=True, capture_output=True)
    return out

def dom(page:Path, profile:Path)->str:
    "The DOM of `page` after Chromium has loaded and rendered it"
    r = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', '--dump-dom', page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

def expected_pages():
    nbs = sorted(p.stem for p in (ROOT/'nbs').glob('*.ipynb'))
    return nbs

@pytest.mark.skipif(CHROMIUM is None, reason='Debian chromium is not installed (.ci/run installs it)')
def test_site_pages_render(site, tmp_path):
    pages = sorted(site.glob('*.html'))
    assert (site/'index.html').exists(), 'index page missing'
    assert len(pages) == len(expected_pages()), f"{len(pages)} pages for {len(expected_pages())} notebooks"
    for page in pages:
        d = dom(page, tmp_path/'profile')
        title = re.search(r'<h1 class="title">([^<]+)</h1>', d)
        assert title and title.group(1).strip(), f"{page.name}: no title"
        if page.name != 'index.html':
            assert re.search(r'<span class="k">(def|class)</span>', d), f"{page.name}: no rendered signature"

@pytest.mark.skipif(CHROMIUM is None, reason='Debian chromium is not installed (.ci/run installs it)')
def test_eval_page_shows_confusion_matrix(site, tmp_path):
    page = site/'eval_confusion.html'
    assert page.exists(), f"no evaluation page among {sorted(p.name for p in site.glob('*.html'))}"
    d = dom(page, tmp_path/'profile')
    assert 'onfusion' in d
    imgs = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', d)
    assert imgs, 'no PNG image on the eval page'
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in imgs]
    assert all(w > 50 and h > 50 for w, h in sizes), sizes

def test_readme_has_no_nested_links():
    "nbdev links backticked names inside links the author wrote; the build unnests them, so README shows one link each"
    import importlib.util
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
    bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)
    assert bd.unnest_links('([[`A.b`](https://h/c.html#a.b)](https://h/c.html#a.b))') == '([`A.b`](https://h/c.html#a.b))'
    nested = re.findall(r'\[\[[^\[\]]+\]\([^()\s]+\)\]\([^()\s]+\)', (ROOT/'README.md').read_text())
    assert not nested, nested
