"""Run every benchmark under bench/ and gather their figures into bench/RESULTS.md.

Each `bench_*.py` measures a figure against the baseline its issue names, in the same run, prints a Markdown
table (figure, value, baseline, ratio, goal) and writes its raw numbers to `bench/out/<topic>.json`.
This script runs them one after the other, echoes their output, and copies each one's tables into RESULTS.md.
"""
import subprocess, sys, time, platform, os
from pathlib import Path

HERE = Path(__file__).resolve().parent

def run(script:Path)->tuple:
    "Run one benchmark, echoing its output; return (exit code, output lines, seconds)"
    t0, lines = time.perf_counter(), []
    p = subprocess.Popen([sys.executable, str(script)], cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        sys.stdout.write(line); lines.append(line.rstrip('\n'))
    return p.wait(), lines, time.perf_counter() - t0

def tables(lines:list)->list:
    "The Markdown table rows of a benchmark's output, with a blank line between tables"
    out, prev = [], False
    for l in lines:
        is_row = l.lstrip().startswith('|')
        if is_row and not prev and out: out.append('')
        if is_row: out.append(l.strip())
        prev = is_row
    return out

def main():
    (HERE/'out').mkdir(exist_ok=True)
    scripts = sorted(HERE.glob('bench_*.py'))
    md = ['# Benchmark results', '',
          f'Measured by `make bench` on {time.strftime("%Y-%m-%d")} ({platform.machine()}, {os.cpu_count()} CPU cores, no GPU, '
          'tiny Qwen3-VL backbone). Every ratio compares two approaches measured in the same run; raw numbers are in '
          '`bench/out/<topic>.json`.', '']
    failed = 0
    for s in scripts:
        print(f'\n== {s.name}', flush=True)
        rc, lines, secs = run(s)
        md += [f'## {s.stem.removeprefix("bench_")}', '', f'Command: `.venv/bin/python bench/{s.name}` ({secs:.0f} s)', '']
        if rc: failed += 1; md += [f'**failed** (exit {rc})', '']; continue
        md += tables(lines) + ['']
    (HERE/'RESULTS.md').write_text('\n'.join(md))
    print(f'\nwrote {HERE/"RESULTS.md"}' + (f' ({failed} benchmark(s) failed)' if failed else ''))
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
