"""The confusion explorer, live: Voilà runs tests/explorer_live.ipynb in a real kernel on a saved evaluation,
and Debian's Chromium, driven by selenium through chromium-driver, clicks confusion cells.

The saved evaluation is synthetic (two routers, three labels, real PNG screenshots), so no model is needed.
The page's screenshot is kept as tests/artifacts/explorer.png.
"""
import os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image, ImageDraw

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
    from moe_router.explore import write_comparison, save_run
    samples = []
    for li, name in enumerate(LABELS):
        for i in range(8):
            img = out.parent/'data'/name/f'{name}_{i}.png'; img.parent.mkdir(parents=True, exist_ok=True)
            im = Image.new('RGB', (240, 160), COLORS[name]); d = ImageDraw.Draw(im)
            d.rectangle([10, 10, 230, 40], outline='#333'); d.text((16, 18), f'{name} #{i}', fill='#000')
            im.save(img)
            samples.append(dict(text=f'{name} request {i}', adapter=name, label=li, source_id=f'{name}_{i}',
                                image=f'{name}/{name}_{i}.png', image_path=str(img), kind='expert'))
    def probs(wrong:dict):
        "Confident, right answers except `{source_id: label}`"
        p = np.full((len(samples), 3), 0.05)
        for i, s in enumerate(samples): p[i, LABELS.index(wrong.get(s['source_id'], s['adapter']))] = 0.9
        return p
    head_wrong = {'claim-window_0': 'calendar', 'claim-window_1': 'calendar', 'claim-window_2': 'calendar', 'ocr_0': 'claim-window', 'ocr_1': 'claim-window'}
    info = dict(dataset=str(out.parent/'data'/'routing'), split='test')
    head = RouterEval(LABELS, samples, probs(head_wrong), name='head', kind='head', info=info)
    lora = RouterEval(LABELS, samples, probs({'calendar_5': 'ocr', 'ocr_0': 'claim-window'}), name='lora', kind='lora', info=info)
    write_comparison(out, head, {'lora': lora}, {})
    save_run(head, out)
    return {('claim-window', 'calendar'): 3, ('ocr', 'claim-window'): 2}

@pytest.fixture(scope='module')
def voila(tmp_path_factory):
    "Voilà serving the explorer notebook on loopback, on a free port, for the saved run"
    tmp = tmp_path_factory.mktemp('explorer')
    cells = saved_run(tmp/'eval')
    port, exe = free_port(), shutil.which('voila') or str(Path(sys.executable).parent/'voila')
    env = dict(os.environ, MOE_ROUTER_EVAL_DIR=str(tmp/'eval'), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
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
        yield dict(url=url, cells=cells, log=tmp/'voila.log')
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

def cell_state(d)->dict:
    "What the cell pane shows: the selected cell's id, its row count, and the decoded size of each image"
    return d.execute_script("""
        const h = document.querySelector('.mr h4[id^="cell-"]'); if (!h) return null;
        const t = h.parentElement.querySelector('table');
        const imgs = t ? [...t.querySelectorAll('img')] : [];
        return {id: h.id, rows: t ? t.querySelectorAll('tbody tr').length : 0,
                imgs: imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])};""")

def click_cell(d, gold:str, pred:str):
    from selenium.webdriver.common.by import By
    b = d.find_element(By.CSS_SELECTOR, f'button.mr-cell[title^="gold {gold} → predicted {pred}:"]')
    d.execute_script('arguments[0].scrollIntoView({block: "center"})', b); b.click()

def wait_for(d, cond, timeout:float, what:str):
    from selenium.webdriver.support.ui import WebDriverWait
    try: return WebDriverWait(d, timeout, poll_frequency=0.2).until(lambda d: cond(d))
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
    click_cell(d, 'ocr', 'claim-window')
    s = shows('ocr', 'claim-window')
    assert all(w == 128 for _, w, _ in s['imgs']), s                # 240x160 screenshots as 128-px thumbnails
    assert 'ocr request 0' in d.find_element(By.CSS_SELECTOR, '.mr table').text
    click_cell(d, 'claim-window', 'calendar')                       # a second click changes the selection
    s2 = shows('claim-window', 'calendar')
    assert s2['id'] != s['id']
    sel = d.find_elements(By.CSS_SELECTOR, 'button.mr-cell.mr-selected')
    assert [b.get_attribute('title') for b in sel] == ['gold claim-window → predicted calendar: 3']
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS/'explorer.png'
    assert d.save_screenshot(str(shot)), 'screenshot not written'
    w, h = Image.open(shot).size
    assert w > 600 and h > 400
    print(f'\nexplorer screenshot: {shot} ({w}x{h}); page ready and both clicks checked in {time.monotonic()-t0:.1f} s')
