"""The confusion explorer on a large saved run (issue 14): open a 10,000-sample evaluation from its files, and
render one confusion cell of 500 samples with thumbnails.

The evaluation is synthetic: 4 labels, 10,000 samples, screenshots of the synthetic experts' sizes
(578x426 claim forms, 225x208 calendars) written as PNG; the 500 samples of the measured cell each have their own
screenshot, the others share 400. The run directory is written by `report.save_run`, as `moe-router-eval --out`
writes it: router-eval.json, the figures, report.html and the thumbnail cache thumbs.npz. Figures:
- save: `report.save_run` without and with thumbs.npz; the difference is what the cache costs at save time;
- open: `Explorer.from_dir` (read router-eval.json, rebuild the RouterEval and its metrics, find every screenshot);
- cell, first render: the first render of the cell in a fresh explorer (thumbnails read from thumbs.npz; the first 12
  screenshots and a typical predicted one decoded at 480 px for the enlarged view, in the thread pool);
- cell, first render without thumbs.npz: a run saved without it (every screenshot decoded in ThumbCache's thread
  pool, and the cache filled for next time), then the same run reopened;
- cell, again: the same cell again, or sorted the other way (thumbnails in memory);
- cell, one thread: the cold render with plain `cell_html` (no cache, no threads), the baseline.
Goals: open < 2 s, a cell < 300 ms. Prints a markdown table and writes bench/out/explorer.json.

`saliency` (gradient x input on the patch embeddings, `saliency.saliency`) is timed on the CPU with the tiny backbone:
a head trained on the shared-instruction synthetic experts, 8 test samples one at a time, against routing the same 8
samples one at a time (a forward pass each): the ratio is what a backward pass through the backbone adds.
Run: .venv/bin/python bench/bench_explorer.py            (everything)
     .venv/bin/python bench/bench_explorer.py saliency   (saliency only, about a minute)
"""
import json, shutil, statistics, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw
from moe_router.evaluate import RouterEval
from moe_router.explore import Explorer, cell_html
from moe_router.thumbs import ThumbCache, THUMBS, read_thumbs
from moe_router.report import save_run

HERE = Path(__file__).resolve().parent
N, CELL, SHARED = 10_000, 500, 400
FULL = 12 + 1   # a cell's first 12 screenshots and a typical predicted screen, decoded at full size (480 px)
LABELS = ['calendar', 'claim-window', 'provider-select', 'ocr']
SIZES = {'calendar': (225, 208), 'claim-window': (578, 426), 'provider-select': (578, 426), 'ocr': (578, 426)}

def screenshot(path:Path, label:str, i:int):
    im = Image.new('RGB', SIZES[label], (230, 240 - i % 40, 255)); d = ImageDraw.Draw(im)
    for j in range(8): d.rectangle([10, 10 + j*24, SIZES[label][0] - 10 - (i*7 + j*13) % 90, 28 + j*24], outline='#333', fill='#fff')
    d.text((14, 12), f'{label} {i}', fill='#000'); im.save(path)

def build(root:Path)->RouterEval:
    "An evaluation of N samples: claim-window -> provider-select holds exactly CELL of them"
    rng = np.random.default_rng(0)
    (root/'data').mkdir(parents=True)
    shared = []
    for i in range(SHARED):
        lab = LABELS[i % 4]; p = root/'data'/f'shared_{i}.png'; screenshot(p, lab, i); shared.append(p.name)
    samples, probs = [], np.zeros((N, 4))
    for i in range(N):
        g = i % 4
        in_cell = g == 1 and i // 4 < CELL
        img = f'cell_{i}.png' if in_cell else shared[i % SHARED]
        if in_cell: screenshot(root/'data'/img, 'claim-window', i)
        p = rng.dirichlet(np.ones(4)*0.3); order = np.argsort(-p)
        want = 2 if in_cell else g if rng.random() < 0.9 else (3 if g == 1 else (g + 1) % 4)
        p[[order[0], want]] = p[[want, order[0]]]; probs[i] = p
        samples.append(dict(text=f'request {i} for {LABELS[g]}', adapter=LABELS[g], label=g, source_id=f's{i:05d}', image=img,
                            image_path=str(root/'data'/img), kind='expert'))
    ev = RouterEval(LABELS, samples, probs, name='head', kind='head', info=dict(dataset=str(root/'data'/'routing'), split='test'))
    assert ev.cm[1, 2] == CELL, ev.cm
    return ev

def timed(f):
    t0 = time.perf_counter(); r = f(); return time.perf_counter() - t0, r

def main():
    root = Path(tempfile.mkdtemp(prefix='bench-explorer-'))
    t_build, ev = timed(lambda: build(root))
    out, bare = root/'eval', root/'eval-no-thumbs'
    t_bare, _ = timed(lambda: save_run(ev, bare, thumbs=False))          # a run saved without the cache
    t_save, _ = timed(lambda: save_run(ev, out))                       # what moe-router-eval --out writes
    n_thumbs, mb = len(read_thumbs(out/THUMBS)), (out/THUMBS).stat().st_size/2**20
    opens = []
    for _ in range(3):
        t, x = timed(lambda: Explorer.from_dir(out, limit=CELL)); opens.append(t)
    assert x.missing == {'head': 0} and len(x.ev.samples) == N
    t_cold, h = timed(lambda: x.cell_view('claim-window', 'provider-select'))
    assert h.count('<tr>') == CELL + 1 and h.count("data:image/jpeg") == CELL + 2*12   # thumbnails; the first 12 rows open full size
    assert (x.thumbs.hits, x.thumbs.decoded) == (CELL, FULL), (x.thumbs.hits, x.thumbs.decoded)
    xb = Explorer.from_dir(bare, limit=CELL)
    t_nocache, hb = timed(lambda: xb.cell_view('claim-window', 'provider-select'))
    assert hb == h and (xb.thumbs.hits, xb.thumbs.decoded) == (0, CELL + FULL) and (bare/THUMBS).is_file()
    xr = Explorer.from_dir(bare, limit=CELL)
    t_refill, _ = timed(lambda: xr.cell_view('claim-window', 'provider-select'))
    assert xr.thumbs.decoded == FULL
    warm = [timed(lambda: x.cell_view('claim-window', 'provider-select'))[0] for _ in range(5)]
    x.ascending = True; t_flip, _ = timed(lambda: x.cell_view('claim-window', 'provider-select'))
    t_plain, _ = timed(lambda: cell_html(x.ev, 'claim-window', 'provider-select', limit=CELL))
    o, w = statistics.median(opens), statistics.median(warm)
    res = dict(samples=N, cell=CELL, build_s=t_build, save_bare_s=t_bare, save_s=t_save, thumbs=n_thumbs, thumbs_mb=mb,
               open_s=opens, cell_cold_s=t_cold, cell_nocache_s=t_nocache, cell_refilled_s=t_refill, cell_warm_s=warm,
               cell_flip_s=t_flip, cell_plain_s=t_plain, workers=ThumbCache().workers)
    shutil.rmtree(root, ignore_errors=True)
    (HERE/'out').mkdir(exist_ok=True); (HERE/'out'/'explorer.json').write_text(json.dumps(res, indent=2))
    print(f"\nExplorer on a saved run of {N:,} samples; one cell of {CELL} samples with 128-px thumbnails "
          f"(synthetic data written in {t_build:.0f} s)\n")
    print('| figure | value | baseline | ratio | goal |\n|---|---|---|---|---|')
    print(f"| save (`save_run`: json, figures, report, {n_thumbs} thumbnails in thumbs.npz, {mb:.1f} MiB) | {t_save*1000:.0f} ms "
          f"| {t_bare*1000:.0f} ms (`thumbs=False`) | cache costs {(t_save - t_bare)*1000:+.0f} ms | – |")
    print(f"| open (`Explorer.from_dir`, median of 3) | {o*1000:.0f} ms | – | {o/2:.2f} of goal | < 2 s |")
    print(f"| cell, first render (thumbnails from thumbs.npz) | {t_cold*1000:.0f} ms | {t_plain*1000:.0f} ms (plain `cell_html`, one thread) "
          f"| {t_plain/t_cold:.1f}x faster | < 300 ms |")
    print(f"| cell, first render of a run without thumbs.npz (decode {CELL}, thread pool, fill the cache) | {t_nocache*1000:.0f} ms "
          f"| {t_plain*1000:.0f} ms | {t_plain/t_nocache:.1f}x faster | < 300 ms |")
    print(f"| the same run reopened (cache filled by the previous row) | {t_refill*1000:.0f} ms | {t_plain*1000:.0f} ms "
          f"| {t_plain/t_refill:.1f}x faster | < 300 ms |")
    print(f"| cell, again (cached thumbnails, median of 5) | {w*1000:.0f} ms | {t_plain*1000:.0f} ms | {t_plain/w:.0f}x faster | < 300 ms |")
    print(f"| cell, sorted the other way (cached) | {t_flip*1000:.0f} ms | {t_plain*1000:.0f} ms | {t_plain/t_flip:.0f}x faster | < 300 ms |")
    print(f"\nwrote {HERE/'out'/'explorer.json'}")

def saliency_time(n:int=8)->dict:
    "Seconds per sample of `saliency.saliency` on the CPU (tiny backbone), against routing one sample"
    import torch
    from moe_router import synth, datagen, routing
    from moe_router.backbone import load_backbone
    from moe_router.head import train_head
    from moe_router.routers import load_router
    from moe_router.saliency import saliency
    torch.set_num_threads(1); root = Path(tempfile.mkdtemp(prefix='bench-saliency-'))
    ex = synth.make_synthetic_experts(root/'experts', per_expert=40, seed=0, ambiguous_frac=1.0)
    ds = datagen.build_routing_dataset(ex, root/'routing', train_samples=20, eval_samples=n, seed=0, log=None)
    model, processor = load_backbone('tiny')
    head = train_head(ds, root/'head', backbone=(model, processor), epochs=20, progress=False, log=None)
    r = load_router(head['path'], model=model, processor=processor); test = routing.load_split(ds, 'test')[0][:n]
    saliency(r, test[:1]); r(test[:1])                                    # warm up
    t_sal, _ = timed(lambda: [saliency(r, [s]) for s in test])
    t_fwd, _ = timed(lambda: [r([s]) for s in test])
    shutil.rmtree(root, ignore_errors=True)
    res = dict(samples=n, saliency_s_per_sample=t_sal/n, route_s_per_sample=t_fwd/n)
    print(f"| saliency per sample (CPU, tiny backbone, 1 thread, n={n}) | {t_sal/n*1000:.0f} ms | {t_fwd/n*1000:.0f} ms "
          f"(routing one sample) | {t_sal/t_fwd:.1f}x | – |")
    return res

if __name__ == '__main__':
    import sys
    if sys.argv[1:] == ['saliency']: saliency_time()
    else: main(); saliency_time()
