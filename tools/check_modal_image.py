"""Resolve the Modal image's pinned requirements for the image's Linux and Python, as a user's first `modal deploy` would.

CI runs this (`.ci/run`), not `make test`: it needs a package registry, which a user's offline machine may not reach.
Exits 1, with uv's explanation, when the pins cannot be installed together.
"""
import subprocess, sys, tempfile
from pathlib import Path
from moe_router.cloud import GPU_PINS, SERVE_PINS, IMAGE_PYTHON

def main()->int:
    with tempfile.TemporaryDirectory() as d:
        req, lock = Path(d)/'modal-image.txt', Path(d)/'modal-image.lock'
        req.write_text('\n'.join([*GPU_PINS, *SERVE_PINS]) + '\n')
        r = subprocess.run([sys.executable, '-m', 'uv', 'pip', 'compile', '-q', '--python-platform', 'x86_64-manylinux_2_28',
                            '--python-version', IMAGE_PYTHON, str(req), '-o', str(lock)], capture_output=True, text=True)
        if r.returncode: print(f"the Modal image's pins do not resolve for Python {IMAGE_PYTHON} on x86_64 Linux:\n{r.stderr}"); return 1
        n = sum(1 for l in lock.read_text().splitlines() if '==' in l and not l.startswith('#'))
        print(f"Modal image: {len(GPU_PINS) + len(SERVE_PINS)} pinned requirements resolve to {n} packages for Python {IMAGE_PYTHON} on x86_64 Linux")
    return 0

if __name__ == '__main__': sys.exit(main())
