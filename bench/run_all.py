"""Run every benchmark under bench/ and gather their figures into bench/RESULTS.md.

Each `bench_*.py` prints a markdown table and writes `bench/out/<topic>.json`:
`{"title": ..., "rows": [{"figure", "value", "baseline", "ratio", "goal", "met"}], "notes": [...]}`.
"""
import json, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent

def main():
    out = HERE/'out'; out.mkdir(exist_ok=True)
    scripts = sorted(HERE.glob('bench_*.py'))
    lines = ['# Benchmark results', '',
             f'Measured by `make bench` on {time.strftime("%Y-%m-%d")} on this machine (2 CPU cores, no GPU, tiny backbone). '
             'Every ratio compares two approaches measured in the same run.', '']
    for s in scripts:
        print(f'== {s.name}', flush=True)
        r = subprocess.run([sys.executable, str(s)], cwd=HERE.parent)
        if r.returncode: lines += [f'## {s.stem}', '', f'**failed** (exit {r.returncode})', '']; continue
        res = json.loads((out/f'{s.stem.removeprefix("bench_")}.json').read_text())
        lines += [f'## {res.get("title", s.stem)}', '', f'Command: `.venv/bin/python bench/{s.name}`', '',
                  '| figure | value | baseline | ratio | goal | met |', '|---|---|---|---|---|---|']
        lines += [f'| {r["figure"]} | {r["value"]} | {r["baseline"]} | {r["ratio"]} | {r["goal"]} | {"yes" if r.get("met") else ("no" if r.get("met") is False else "–")} |'
                  for r in res['rows']]
        lines += [''] + [f'- {n}' for n in res.get('notes', [])] + ['']
    (HERE/'RESULTS.md').write_text('\n'.join(lines))
    print(f'wrote {HERE/"RESULTS.md"}')

if __name__ == '__main__': main()
