"""Synthetic expert datasets: how fast `make_synthetic_experts` writes them, with the cached text stamps
against PIL's plain `ImageDraw.text` (the baseline), and whether the same seed gives the same bytes.

Writes bench/out/synth.json (see bench/run_all.py for the format) and prints a markdown table.
"""
import hashlib, json, shutil, tempfile, time
from pathlib import Path
from PIL import ImageDraw
import moe_router.synth as synth
import moe_router.screens as screens

HERE = Path(__file__).resolve().parent
PER_EXPERT, REPEATS = 60, 3

def plain_text(d, xy, s, size=9, fill='black', anchor='la'):
    "The baseline: PIL renders every label with FreeType each time"
    d.text(xy, str(s), font=screens.font(size), fill=fill, anchor=anchor)

def digest(root):
    h = hashlib.sha256()
    for f in sorted(Path(root).rglob('*')):
        if f.is_file(): h.update(str(f.relative_to(root)).encode()); h.update(f.read_bytes())
    return h.hexdigest()

def best_time(tmp, tag):
    "Best of REPEATS runs of make_synthetic_experts(per_expert=60), and the digest of the last output"
    ts = []
    for i in range(REPEATS):
        out = tmp/f'{tag}{i}'
        screens._text_mask.cache_clear()
        t0 = time.perf_counter(); synth.make_synthetic_experts(out, per_expert=PER_EXPERT, seed=0); ts.append(time.perf_counter()-t0)
    return min(ts), digest(out)

def main():
    tmp = Path(tempfile.mkdtemp())
    try:
        fast, d_fast = best_time(tmp, 'fast')
        orig = screens.text; screens.text = plain_text
        try: slow, d_slow = best_time(tmp, 'slow')
        finally: screens.text = orig
        _, d_again = best_time(tmp, 'again')
    finally: shutil.rmtree(tmp)
    n = 3*PER_EXPERT
    rows = [dict(figure=f'make_synthetic_experts, 3 x {PER_EXPERT} records (s)', value=round(fast, 2), baseline=round(slow, 2),
                 ratio=f'{slow/fast:.1f}x faster', goal='<= 2 s', met=fast <= 2),
            dict(figure='records/s (render + PNG + JSONL)', value=round(n/fast), baseline=round(n/slow),
                 ratio=f'{slow/fast:.1f}x', goal='>= 90', met=n/fast >= 90),
            dict(figure='same seed, byte-identical output', value=d_fast == d_again, baseline='-', ratio='-', goal='True',
                 met=d_fast == d_again),
            dict(figure='cached stamps draw the same pixels as PIL', value=d_fast == d_slow, baseline='-', ratio='-', goal='True',
                 met=d_fast == d_slow)]
    res = dict(title='Synthetic expert datasets (moe_router.synth)', rows=rows,
               notes=[f'best of {REPEATS} runs; baseline = PIL `ImageDraw.text` for every label (no glyph-mask cache)',
                      'PNG encoding (compress_level=1) is now most of the time for the 578x426 claim windows'])
    (HERE/'out').mkdir(exist_ok=True); (HERE/'out'/'synth.json').write_text(json.dumps(res, indent=2))
    print('| figure | value | baseline | ratio | goal | met |\n|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['figure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['goal']} | {'yes' if r['met'] else 'no'} |")

if __name__ == '__main__': main()
