"""`make lab`: JupyterLab on a scratch workspace, `lab/` (ignored by git), on loopback, printing the URL to open
(with its token) once it is up.

`lab/` sits outside `nbs/`, so nothing saved there becomes a docs page, enters `nbs/sidebar.yml` or is collected by
the tests. The first run writes `lab/explore.ipynb`, a starter notebook that opens the latest evaluation under `runs/`
in the explorer; it is never overwritten. The server's own log is kept in `.cache/lab.log`; critical and error lines
are echoed. Ctrl-C stops it.
"""
import json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT/'lab'

def latest_run(root:Path=ROOT/'runs')->Path|None:
    "The newest evaluation directory (holding `router-eval.json`) under `root`, or None"
    evals = sorted(root.glob('**/router-eval.json'), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    evals = [p for p in evals if p.parent.parent.name != 'compare']     # a run's own directory, not its compared routers
    return evals[-1].parent if evals else None

def starter(lab:Path=LAB, run:Path|None=None)->Path:
    "Write `lab/explore.ipynb` (once) pointing at `run`, the latest evaluation by default"
    nb = lab/'explore.ipynb'
    if nb.exists(): return nb
    run = run or latest_run()
    where = os.path.relpath(run, lab) if run else os.path.relpath(ROOT/'runs'/'demo'/'eval', lab)
    note = '' if run else "  # no run yet: `make demo` writes one here"
    cells = [dict(cell_type='markdown', metadata={}, source=["# Scratch: explore a run\n",
                  "This workspace is yours: nothing here reaches the docs, the sidebar or the tests. ",
                  "`Explorer.from_dir(run, roots=[...])` finds screenshots that moved; `previous=` opens the run-to-run view."]),
             dict(cell_type='code', metadata={}, execution_count=None, outputs=[],
                  source=["from moe_router.explore import Explorer\n", f"x = Explorer.from_dir({where!r}){note}\n", "x.widget()"])]
    lab.mkdir(exist_ok=True)
    nb.write_text(json.dumps(dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')),
                                  nbformat=4, nbformat_minor=5), indent=1) + '\n')
    return nb

def main(port:str=os.environ.get('LAB_PORT', '8888')):
    nb = starter()
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--ServerApp.root_dir={LAB}']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = ROOT/'.cache'/'lab.log'; log.parent.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get('PYTHONPATH')] if p))
    p, shown = subprocess.Popen(cmd, cwd=LAB, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), False
    print(f"JupyterLab on {LAB} (scratch, ignored by git; start with {nb.name}; server log: {log}); Ctrl-C stops it", flush=True)
    try:
        with open(log, 'w') as f:
            for line in p.stdout:
                f.write(line); f.flush()
                m = re.search(r'(http://127\.0\.0\.1:\d+/lab\?token=\w+)', line)
                if m and not shown: print(f'lab URL: {m.group(1).replace("/lab?", f"/lab/tree/{nb.name}?")}', flush=True); shown = True
                elif re.match(r'\[E ', line) or (re.match(r'\[C ', line) and not line.rstrip().endswith(']')): print(line, end='', flush=True)
    except KeyboardInterrupt: p.terminate()
    sys.exit(p.wait())

if __name__ == '__main__': main()
