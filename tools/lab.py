"""`make lab`: JupyterLab on nbs/, on loopback, printing the URL to open (with its token) once it is up.

The server's own log is kept in `.cache/lab.log`; critical and error lines are echoed. Ctrl-C stops it.
"""
import os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def main(port:str=os.environ.get('LAB_PORT', '8888')):
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--ServerApp.root_dir={ROOT/"nbs"}']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = ROOT/'.cache'/'lab.log'; log.parent.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get('PYTHONPATH')] if p))
    p, shown = subprocess.Popen(cmd, cwd=ROOT/'nbs', env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), False
    print(f"JupyterLab on {ROOT/'nbs'} (server log: {log}); Ctrl-C stops it", flush=True)
    try:
        with open(log, 'w') as f:
            for line in p.stdout:
                f.write(line); f.flush()
                m = re.search(r'(http://127\.0\.0\.1:\d+/lab\?token=\w+)', line)
                if m and not shown: print(f'lab URL: {m.group(1)}', flush=True); shown = True
                elif re.match(r'\[E ', line) or (re.match(r'\[C ', line) and not line.rstrip().endswith(']')): print(line, end='', flush=True)
    except KeyboardInterrupt: p.terminate()
    sys.exit(p.wait())

if __name__ == '__main__': main()
