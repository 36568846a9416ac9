#!/usr/bin/env python3
"""Benchmark: building a routing dataset by streaming (moe_router.datagen) vs the naive load-everything approach.

Three synthetic experts of N records each (JSONL made by text templating; every record has its own image path,
a symlink to one of a handful of real PNGs). Each approach runs in a fresh subprocess, which reports its wall
time and peak RSS (`ru_maxrss`). Sources are built once under bench/out/datagen_src/ and reused.

    .venv/bin/python bench/bench_datagen.py                 # N = 20k and 200k, 500 train + 100 eval per expert
    .venv/bin/python bench/bench_datagen.py --sizes 2000    # quick look

Prints a markdown table (figure, value, baseline, ratio, goal) and writes bench/out/datagen.json.
Goals (issue 2): >= 5x lower peak memory than naive at equal or better speed; peak memory flat when the
sources grow 10x; the same seed gives byte-identical output.
"""
import argparse, json, os, random, resource, shutil, subprocess, sys, time
from pathlib import Path
from moe_router.toolcall import tool_call

HERE = Path(__file__).resolve().parent
OUT = HERE/'out'
EXPERTS = ['calendar', 'claim-window', 'provider-select']
SYSTEM = ("Use a mouse and keyboard to interact with a computer, and take screenshots.\n* The screen's resolution is "
          "1000x1000.\n* Click buttons, links and icons with the cursor tip in the center of the element.")
TASKS = {'calendar': ['Click {m} {d} in the calendar', 'Select the {d}th of {m}', 'Go to the next month'],
         'claim-window': ['Scroll down one page within the procedures grid.', 'Edit the date of service on line {d}',
                          'Click the Save button'],
         'provider-select': ['Select Dr. {n} from the dropdown list', 'Choose {n} as the treating provider',
                             'Open the provider list and pick Dr. {n}']}
MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December']
NAMES = ['Jaramillo', 'Okafor', 'Lindqvist', 'Tanaka', 'Moreau', 'Patel', 'Nguyen', 'Schmidt']
FILES = ['data.jsonl', 'train.jsonl', 'val.jsonl', 'test.jsonl']

# ---------------------------------------------------------------- sources
def make_sources(root:Path, n:int)->dict:
    "Write 3 expert datasets of `n` records under root/str(n); reuse them if complete"
    base = root/str(n)
    if (base/'.done').exists(): return {e: base/e for e in EXPERTS}
    if base.exists(): shutil.rmtree(base)
    from PIL import Image
    pngs = root/'png'; pngs.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        if not (pngs/f'{i}.png').exists(): Image.new('RGB', (64, 48), (40*i, 90, 160)).save(pngs/f'{i}.png')
    rng = random.Random(0)
    for e in EXPERTS:
        d = base/e; (d/'images').mkdir(parents=True)
        tpl = TASKS[e]
        with open(d/'train.jsonl', 'w') as f:
            for i in range(n):
                rid = f'{e}_{i:07d}'
                text = rng.choice(tpl).format(m=rng.choice(MONTHS), d=rng.randint(1, 28), n=rng.choice(NAMES))
                x, y = rng.randint(0, 999), rng.randint(0, 999)
                gpt = tool_call('left_click', [x, y], lead='\n')
                rec = {'id': rid, 'image': f'images/{rid}.png',
                       'conversations': [{'from': 'system', 'value': SYSTEM}, {'from': 'human', 'value': '<image>\n'+text},
                                         {'from': 'gpt', 'value': gpt}],
                       'metadata': {'task_type': e, 'real_coords': [x//10, y//10]}}
                f.write(json.dumps(rec)+'\n')
                os.symlink(pngs/f'{i % 4}.png', d/'images'/f'{rid}.png')
    (base/'.done').write_text('ok')
    return {e: base/e for e in EXPERTS}

# ---------------------------------------------------------------- the two approaches (run in a child process)
def run_stream(experts, out, a):
    from moe_router.datagen import build_routing_dataset
    build_routing_dataset(experts, out, train_samples=a.train_samples, eval_samples=a.eval_samples, seed=a.seed,
                          progress=False, log=None)

def run_naive(experts, out, a):
    "Load every record of an expert into memory, convert all, shuffle, take eval then train (image-disjoint)"
    from moe_router.config import load_registry, write_jsonl, atomic_write_json, atomic_dir
    from moe_router.records import ExpertSource, to_routing_sample
    from moe_router.datagen import split_counts
    reg, rng = load_registry(), random.Random(a.seed)
    picked = {}
    for name, p in experts.items():
        src = ExpertSource(name, reg.label(name), p)
        with open(src.path) as f: recs = [json.loads(l) for l in f]
        samples = [to_routing_sample(r, name, src.label, src.dataset, i) for i, r in enumerate(recs, 1)]
        rng.shuffle(samples)
        ev, imgs, ids = [], set(), set()
        for s in samples:
            if len(ev) == a.eval_samples: break
            if s['image'] not in imgs: ev.append(s); imgs.add(s['image']); ids.add(s['source_id'])
        tr = [s for s in samples if s['image'] not in imgs and s['source_id'] not in ids][:a.train_samples]
        assert all((src.root/s['image']).is_file() for s in ev+tr)
        picked[name] = (ev, tr)
        del recs, samples
    cnt = split_counts({k: len(v[1]) for k, v in picked.items()}, 0.8, rng)
    train = [s for k, (_, tr) in picked.items() for s in tr[:cnt[k]]]
    val = [s for k, (_, tr) in picked.items() for s in tr[cnt[k]:]]
    test = [s for ev, _ in picked.values() for s in ev]
    with atomic_dir(out) as d:
        for n, rows in [('data', train+val), ('train', train), ('val', val), ('test', test)]: write_jsonl(d/f'{n}.jsonl', rows)
        atomic_write_json(d/'metadata.json', {'samples': {'train': len(train), 'val': len(val), 'eval': len(test)}})

def child(a):
    import moe_router.datagen  # imports (modal, etc.) count in both approaches' baseline
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    experts = {e: Path(a.src)/e for e in EXPERTS}
    t = time.perf_counter()
    (run_stream if a.child == 'stream' else run_naive)(experts, Path(a.out), a)
    secs = time.perf_counter() - t
    print(json.dumps({'seconds': secs, 'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'base_kb': base_kb}))

def measure(approach, src, out, a):
    if out.exists(): shutil.rmtree(out)
    cmd = [sys.executable, __file__, '--child', approach, '--src', str(src), '--out', str(out),
           '--train-samples', str(a.train_samples), '--eval-samples', str(a.eval_samples), '--seed', str(a.seed)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f"{approach} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])

# ---------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[20_000, 200_000], help='records per expert')
    p.add_argument('--train-samples', type=int, default=500); p.add_argument('--eval-samples', type=int, default=100)
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--work', default=str(OUT/'datagen_src'), help='where the synthetic sources are kept')
    p.add_argument('--child'); p.add_argument('--src'); p.add_argument('--out')
    a = p.parse_args()
    if a.child: return child(a)
    work, runs = Path(a.work), OUT/'datagen_runs'
    res = {'sizes': a.sizes, 'experts': len(EXPERTS), 'train_samples': a.train_samples, 'eval_samples': a.eval_samples, 'runs': {}}
    for n in a.sizes:
        t = time.perf_counter(); src = make_sources(work, n)
        print(f"sources: 3 x {n:,} records ready in {time.perf_counter()-t:.1f}s", file=sys.stderr)
        src = src['calendar'].parent
        for appr in ['stream', 'naive']:
            m = measure(appr, src, runs/f'{appr}_{n}', a)
            m['records_per_s'] = 3*n/m['seconds']
            res['runs'][f'{appr}_{n}'] = m
            print(f"{appr:6s} n={n:>7,}: {m['seconds']:.2f}s  {m['records_per_s']:,.0f} rec/s  peak {m['peak_kb']/1024:.0f} MB "
                  f"(imports {m['base_kb']/1024:.0f} MB)", file=sys.stderr)
    n0, n1 = min(a.sizes), max(a.sizes)
    again = measure('stream', work/str(n0), runs/f'stream_{n0}_again', a)
    same = all((runs/f'stream_{n0}'/f).read_bytes() == (runs/f'stream_{n0}_again'/f).read_bytes() for f in FILES)
    R = res['runs']; s1, b1, s0 = R[f'stream_{n1}'], R[f'naive_{n1}'], R[f'stream_{n0}']
    mem_ratio = b1['peak_kb']/s1['peak_kb']
    grow = lambda m: (m['peak_kb'] - m['base_kb'])/1024
    speed_ratio = s1['records_per_s']/b1['records_per_s']
    flat = s1['peak_kb']/s0['peak_kb']
    res['summary'] = dict(peak_mb_stream=s1['peak_kb']/1024, peak_mb_naive=b1['peak_kb']/1024, peak_ratio=mem_ratio,
                          growth_mb_stream=grow(s1), growth_mb_naive=grow(b1),
                          records_per_s_stream=s1['records_per_s'], records_per_s_naive=b1['records_per_s'],
                          speed_ratio=speed_ratio, peak_mb_stream_small=s0['peak_kb']/1024, flat_ratio=flat,
                          byte_identical=same)
    rows = [('peak RSS, 3x%s records (MB)' % f'{n1:,}', f"{s1['peak_kb']/1024:.0f}", f"{b1['peak_kb']/1024:.0f}", f"{mem_ratio:.1f}x lower", '>= 5x lower'),
            ('RSS above imports (MB)', f"{grow(s1):.0f}", f"{grow(b1):.0f}", f"{grow(b1)/max(grow(s1), 1e-9):.0f}x lower", '-'),
            ('records/s, 3x%s records' % f'{n1:,}', f"{s1['records_per_s']:,.0f}", f"{b1['records_per_s']:,.0f}", f"{speed_ratio:.2f}x", '>= 1x'),
            (f'peak RSS {n0:,} -> {n1:,} per expert (MB)', f"{s0['peak_kb']/1024:.0f} -> {s1['peak_kb']/1024:.0f}",
             f"{R[f'naive_{n0}']['peak_kb']/1024:.0f} -> {b1['peak_kb']/1024:.0f}", f"{flat:.2f}x growth", 'flat (~1.0x)'),
            ('same seed -> byte-identical files', 'yes' if same else 'NO', '-', '-', 'yes')]
    print(f"\nRouting dataset: {len(EXPERTS)} experts, {a.train_samples} train + {a.eval_samples} eval per expert, seed {a.seed}\n")
    print('| figure | moe_router (stream) | naive (load all) | ratio | goal |\n|---|---|---|---|---|')
    for r in rows: print('| ' + ' | '.join(r) + ' |')
    OUT.mkdir(exist_ok=True); (OUT/'datagen.json').write_text(json.dumps(res, indent=2))
    print(f"\nwrote {OUT/'datagen.json'}")
    shutil.rmtree(runs, ignore_errors=True)

if __name__ == '__main__': main()
