"""One headless Chromium, driven by selenium through chromium-driver, for every browser test: each page of the docs site,
then the live explorer.

The docs site is built offline (`tools/build_docs.py`, the `site` fixture of `test_docs.py`); every page must render
with a title and, past the index, a signature; the evaluation page must show its confusion matrix as a real PNG.

The confusion explorer, live: Voilà runs tests/explorer_live.ipynb in a real kernel on a saved evaluation,
and Debian's Chromium, driven by selenium through chromium-driver, runs a researcher's whole workflow: click a cell,
enlarge a screenshot, switch router (the threshold follows), move the threshold by keyboard and by typing, export the
cell and read the file back, and open the run-to-run view.

The saved evaluation is synthetic (two routers, three labels, real PNG screenshots), so no model is needed.
The page's screenshot is kept as tests/artifacts/explorer.png.
"""
import base64, io, os, re, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_docs import site, expected_pages   # the site, built once

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'tests'/'artifacts'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
DRIVER = shutil.which('chromedriver') or next((p for p in ['/usr/lib/chromium/chromedriver'] if Path(p).exists()), None)
LABELS = ['calendar', 'claim-window', 'ocr']
COLORS = {'calendar': '#cfe0ff', 'claim-window': '#ffe3b8', 'ocr': '#e8e8e8'}
STARTUP_S, PAGE_S = 90, 120      # bounds on Voilà's start and on the page's kernel run

pytestmark = [pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                 reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)"),
              pytest.mark.skipif(shutil.which('voila') is None and not (Path(sys.executable).parent/'voila').exists(),
                                 reason='voila is not installed (it is in the dev extras)')]

def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def saved_run(out:Path)->dict:
    "Write a two-router evaluation of 24 samples with PNG screenshots; return the expected cell sizes of `head`"
    from moe_router.evaluate import RouterEval
    from moe_router.report import write_comparison, save_run
    samples = []
    for li, name in enumerate(LABELS):
        for i in range(8):
            img = out.parent/'data'/name/f'{name}_{i}.png'; img.parent.mkdir(parents=True, exist_ok=True)
            im = Image.new('RGB', (240, 160), COLORS[name]); d = ImageDraw.Draw(im)
            d.rectangle([10, 10, 230, 40], outline='#333'); d.text((16, 18), f'{name} #{i}', fill='#000')
            im.save(img)
            samples.append(dict(text=f'{name} request {i}', adapter=name, label=li, source_id=f'{name}_{i}', answer=f'click({i}, 10)',
                                pair_id=None, image=f'{name}/{name}_{i}.png', image_path=str(img), kind='expert'))
    def probs(wrong:dict, low:float=0.7, high:float=0.9):
        "Right answers at confidence `high` except `{source_id: label}`, wrong ones at `low`: the selective threshold is `high`"
        p = np.zeros((len(samples), 3))
        for i, s in enumerate(samples):
            c = low if s['source_id'] in wrong else high; p[i] = (1 - c)/2
            p[i, LABELS.index(wrong.get(s['source_id'], s['adapter']))] = c
        return p
    head_wrong = {'claim-window_0': 'calendar', 'claim-window_1': 'calendar', 'claim-window_2': 'calendar', 'ocr_0': 'claim-window', 'ocr_1': 'claim-window'}
    info = dict(dataset=str(out.parent/'data'/'routing'), split='test')
    head = RouterEval(LABELS, samples, probs(head_wrong), name='head', kind='head', info=info)
    lora = RouterEval(LABELS, samples, probs({'calendar_5': 'ocr', 'ocr_0': 'claim-window'}, 0.6, 0.8), name='lora', kind='lora', info=info)
    write_comparison(out, head, {'lora': lora}, {})
    save_run(head, out)
    before = dict(head_wrong, **{'claim-window_3': 'calendar', 'claim-window_4': 'calendar'})   # an earlier run: the cell was 5
    save_run(RouterEval(LABELS, samples, probs(before), name='head', kind='head', info=info), out.parent/'eval-before', thumbs=False)
    return dict(cells={('claim-window', 'calendar'): 3, ('ocr', 'claim-window'): 2},
                thresholds={e.name: e.metrics['selective']['threshold'] for e in (head, lora)})   # 0.9 and 0.8

@pytest.fixture(scope='module')
def voila(tmp_path_factory):
    "Voilà serving the explorer notebook on loopback, on a free port, for the saved run"
    tmp = tmp_path_factory.mktemp('explorer')
    run = saved_run(tmp/'eval')
    port, exe = free_port(), shutil.which('voila') or str(Path(sys.executable).parent/'voila')
    env = dict(os.environ, MOE_ROUTER_EVAL_DIR=str(tmp/'eval'), MOE_ROUTER_PREVIOUS_DIR=str(tmp/'eval-before'), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
               JUPYTER_CONFIG_DIR=str(tmp/'jupyter-config'), JUPYTER_RUNTIME_DIR=str(tmp/'jupyter-runtime'))
    log = open(tmp/'voila.log', 'w')
    proc = subprocess.Popen([exe, str(ROOT/'tests'/'explorer_live.ipynb'), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                             '--show_tracebacks=True', '--Voila.root_dir=' + str(ROOT/'tests')],
                            cwd=ROOT/'tests', env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, t0 = f'http://127.0.0.1:{port}/', time.monotonic()
    try:
        while True:
            if proc.poll() is not None: pytest.fail(f'voila exited with {proc.returncode}:\n' + (tmp/'voila.log').read_text()[-3000:])
            try: socket.create_connection(('127.0.0.1', port), timeout=2).close(); break   # listening (a GET would run the notebook)
            except OSError: pass
            if time.monotonic() - t0 > STARTUP_S: pytest.fail(f'voila did not answer within {STARTUP_S} s:\n' + (tmp/'voila.log').read_text()[-3000:])
            time.sleep(0.5)
        yield dict(url=url, log=tmp/'voila.log', eval=tmp/'eval', **run)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        log.close()

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1400,1600',
              '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
              f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}']: opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(PAGE_S)
    yield d
    d.quit()

def dom(d, page:Path)->str:
    "The DOM of `page` after the browser has loaded and rendered it"
    d.get(page.as_uri()); return d.page_source

def test_site_pages_render(site, browser):
    "Every page of the docs site renders in Chromium with a title, and past the index with a signature"
    pages = sorted(site.glob('*.html'))
    assert (site/'index.html').exists(), 'index page missing'
    assert len(pages) == len(expected_pages()), f"{len(pages)} pages for {len(expected_pages())} notebooks"
    for page in pages:
        d = dom(browser, page)
        title = re.search(r'<h1 class="title">([^<]+)</h1>', d)
        assert title and title.group(1).strip(), f"{page.name}: no title"
        if page.name != 'index.html':
            assert re.search(r'<span class="k">(def|class)</span>', d), f"{page.name}: no rendered signature"

def test_eval_page_shows_confusion_matrix(site, browser):
    "The evaluation page shows its confusion matrix as a real PNG"
    page = site/'eval_confusion.html'
    assert page.exists(), f"no evaluation page among {sorted(p.name for p in site.glob('*.html'))}"
    d = dom(browser, page)
    assert 'onfusion' in d
    imgs = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', d)
    assert imgs, 'no PNG image on the eval page'
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in imgs]
    assert all(w > 50 and h > 50 for w, h in sizes), sizes

def cell_state(d)->dict:
    "What the cell pane shows: the selected cell's id, its row count, and the decoded size of each image"
    return d.execute_script("""
        const h = document.querySelector('.mr h4[id^="cell-"]'); if (!h) return null;
        const t = h.parentElement.querySelector('table');
        const imgs = t ? [...t.querySelectorAll('tbody tr')].map(r => r.querySelector('img')) : [];   // each row's thumbnail
        return {id: h.id, rows: t ? t.querySelectorAll('tbody tr').length : 0,
                imgs: imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])};""")

def click_cell(d, gold:str, pred:str):
    from selenium.webdriver.common.by import By
    b = d.find_element(By.CSS_SELECTOR, f'button.mr-cell[title^="gold {gold} → predicted {pred}:"]')
    d.execute_script('arguments[0].scrollIntoView({block: "center"})', b); b.click()

def wait_for(d, cond, timeout:float, what:str):
    "Poll `cond` until it is truthy; an element the widget re-renders between lookup and read is looked up again"
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try: return WebDriverWait(d, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(lambda d: cond(d))
    except Exception as e: raise AssertionError(f'{what} (last state {cell_state(d)})') from e

def test_click_confusion_cells_in_chromium(voila, browser):
    from selenium.webdriver.common.by import By
    d, t0 = browser, time.monotonic()
    d.get(voila['url'])
    wait_for(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, 'button.mr-cell')) == 9, PAGE_S,
             f"the explorer's 9 cell buttons never appeared; voila log:\n{voila['log'].read_text()[-2000:]}")
    first = wait_for(d, cell_state, 30, 'no cell pane')            # opens on the largest misroute
    assert first['id'] == 'cell-claim-window--calendar', first

    def shows(gold, pred):
        n = voila['cells'][gold, pred]
        def ok(d):
            s = cell_state(d)
            return s if s and s['id'] == f'cell-{gold}--{pred}' and s['rows'] == n and len(s['imgs']) == n \
                        and all(c and w > 0 and h > 0 for c, w, h in s['imgs']) else None
        return wait_for(d, ok, 30, f'cell {gold} -> {pred}: expected {n} rows with decoded images')
    t_ready = time.monotonic() - t0; tc = time.monotonic()
    click_cell(d, 'ocr', 'claim-window')
    s = shows('ocr', 'claim-window'); t_click = time.monotonic() - tc
    assert all(w == 128 for _, w, _ in s['imgs']), s                # 240x160 screenshots as 128-px thumbnails
    assert 'ocr request 0' in d.find_element(By.CSS_SELECTOR, '.mr table').text
    click_cell(d, 'claim-window', 'calendar')                       # a second click changes the selection
    s2 = shows('claim-window', 'calendar')
    assert s2['id'] != s['id']
    sel = d.find_elements(By.CSS_SELECTOR, 'button.mr-cell.mr-selected')
    assert [b.get_attribute('title') for b in sel] == ['gold claim-window → predicted calendar: 3 of 8 (38%)']
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS/'explorer.png'
    assert d.save_screenshot(str(shot)), 'screenshot not written'
    w, h = Image.open(shot).size
    assert w > 600 and h > 400
    print(f'\nexplorer screenshot: {shot} ({w}x{h}); page ready in {t_ready:.1f} s (kernel start and widget render), '
          f'a cell click shown in {t_click:.2f} s (polled every 0.2 s); both clicks checked in {time.monotonic()-t0:.1f} s')
    enlarge_a_screenshot(d)
    d.save_screenshot(str(ARTIFACTS/'explorer-enlarged.png'))      # the docs' picture of the live widget (nbs/images/explorer-live.png)
    threshold_follows_the_router(d, voila['thresholds'])
    move_the_threshold(d)
    export_and_read_back(d, voila['eval'])
    run_to_run(d)
    d.save_screenshot(str(ARTIFACTS/'explorer-workflow.png'))
    print(f'whole workflow checked in {time.monotonic()-t0:.1f} s')

def tab(d, title:str):
    "Open the explorer's tab called `title`"
    from selenium.webdriver.common.by import By
    t = next(t for t in d.find_elements(By.CSS_SELECTOR, '.lm-TabBar-tab, .p-TabBar-tab') if t.text.strip() == title)
    d.execute_script('arguments[0].scrollIntoView({block: "center"})', t); t.click()

def number_box(d):
    "The threshold's number box"
    from selenium.webdriver.common.by import By
    return next(e for e in d.find_elements(By.CSS_SELECTOR, '.widget-text input[type=number]') if e.is_displayed())

def enlarge_a_screenshot(d):
    "A click on a thumbnail opens the full screenshot beside a typical screen of the predicted expert"
    from selenium.webdriver.common.by import By
    thumb = d.find_element(By.CSS_SELECTOR, '.mr details.shot > summary img')
    d.execute_script('arguments[0].scrollIntoView({block: "center"})', thumb); thumb.click()
    big = wait_for(d, lambda d: d.execute_script("""
        const o = document.querySelector('.mr details.shot[open]'); if (!o) return null;
        return [...o.querySelectorAll('.full img')].map(i => [i.alt, i.naturalWidth, i.getBoundingClientRect().width]);"""),
        10, 'the screenshot did not open full size')
    assert [a for a, *_ in big] == ['full screenshot', 'typical'], big
    assert all(w == 240 and shown > 128 for _, w, shown in big), big        # 240x160 screenshots at full size, not the thumbnail

def dropdown(d, label:str):
    "The explorer's dropdown described as `label`, as a selenium `Select`"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    w = next(w for w in d.find_elements(By.CSS_SELECTOR, '.widget-dropdown') if w.find_element(By.CSS_SELECTOR, 'label').text.strip() == label)
    return Select(w.find_element(By.CSS_SELECTOR, 'select'))

def threshold_follows_the_router(d, thresholds:dict):
    "Switching router puts the threshold at that router's own selective threshold"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    tab(d, 'threshold')
    box = lambda: float(number_box(d).get_attribute('value'))
    wait_for(d, lambda d: abs(box() - round(thresholds['head'], 2)) < 1e-9, 10, f"threshold not at head's {thresholds['head']}")
    dropdown(d, 'router').select_by_visible_text('lora')
    wait_for(d, lambda d: abs(box() - round(thresholds['lora'], 2)) < 1e-9, 15, f"threshold did not follow to lora's {thresholds['lora']}")

def move_the_threshold(d):
    "The slider moves by keyboard, one step per key, and the number box takes a typed value; the view follows both"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    box, before = number_box(d), float(number_box(d).get_attribute('value'))
    handle = next(h for h in d.find_elements(By.CSS_SELECTOR, '.noUi-handle, .slider-container .ui-slider-handle') if h.is_displayed())
    handle.click(); handle.send_keys(Keys.ARROW_LEFT)
    wait_for(d, lambda d: abs(float(number_box(d).get_attribute('value')) - (before - 0.01)) < 1e-9, 10, 'the left arrow did not move the threshold by 0.01')
    box = number_box(d); box.click(); box.send_keys(Keys.CONTROL, 'a'); box.send_keys('0.42', Keys.ENTER)
    wait_for(d, lambda d: 'threshold 0.42' in d.find_element(By.CSS_SELECTOR, '.mr-threshold').text, 10, 'typing 0.42 did not move the threshold')

def export_and_read_back(d, run:Path):
    "The export button writes the selected cell, every field and in the order shown, and says where"
    import json
    from selenium.webdriver.common.by import By
    tab(d, 'cells'); click_cell(d, 'ocr', 'claim-window')
    wait_for(d, lambda d: (cell_state(d) or {}).get('id') == 'cell-ocr--claim-window', 15, "lora's ocr -> claim-window cell not shown")
    b = d.find_element(By.CSS_SELECTOR, 'button.mr-export'); d.execute_script('arguments[0].scrollIntoView({block: "center"})', b); b.click()
    said = wait_for(d, lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, '.widget-html') if e.text.startswith('wrote ')), None),
                    15, 'the export said nothing')
    f = Path(said[len('wrote '):].strip())
    assert f.parent == run/'exports' and f.name == 'lora--ocr--claim-window.jsonl', f
    recs = [json.loads(l) for l in f.read_text().splitlines()]
    shown = [e.text.split('\n')[0] for e in d.find_elements(By.CSS_SELECTOR, '.mr h4[id^="cell-"] + table tbody tr td:nth-child(2)')]
    assert [r['text'] for r in recs] == [t for t in shown if t] and all('answer' in r and 'pair_id' in r for r in recs), (recs, shown)
    assert all(Path(r['image']).is_absolute() and Path(r['image']).is_file() for r in recs), recs

def run_to_run(d):
    "The run-to-run view shows the earlier run against this one, with McNemar's verdict"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    dropdown(d, 'router').select_by_visible_text('head')
    tab(d, 'run to run')
    text = wait_for(d, lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, '.mr-runs') if e.is_displayed()), None), 15, 'no run-to-run view')
    assert 'McNemar' in text and 'claim-window' in text, text
