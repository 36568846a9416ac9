"""The house stays as built: floors, no import circles, modal in the cloud module alone (read with `ast`)."""
import ast, subprocess, sys
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'moe_router'
# Floors, ground first: a module imports only from its own floor or below.
FLOORS = {
    'config': 1, 'flags': 1,
    'toolcall': 2, 'records': 2, 'routing': 2, 'history': 2, 'datagen': 2, 'screens': 2, 'synth': 2, 'ocr': 2,
    'metrics': 2, 'figures': 2,
    'backbone': 3,
    'lora': 4, 'head': 4, 'router_lora': 4, 'routers': 4, 'experts': 4,
    'evaluate': 5, 'shards': 5, 'cost': 5, 'thumbs': 5, 'saliency': 5, 'explore': 5, 'report': 5, 'stack': 5, 'decode': 5, 'infer': 5,
    'demo': 6, 'service': 6, 'serve': 6,
    'cloud': 7, 'offline': 7,
    'cli': 8,
}
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))

def imports(mod:str)->list:
    "Every `(module, lineno)` that `mod` imports anywhere (top level or inside a function)"
    tree = ast.parse((PKG/f'{mod}.py').read_text())
    res = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): res += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:   # from . import x / from .x import y
                if base: res.append((f'moe_router.{base}', node.lineno))
                else: res += [(f'moe_router.{a.name}', node.lineno) for a in node.names]
            elif base == 'moe_router': res += [(f'moe_router.{a.name}', node.lineno) for a in node.names]
            else: res.append((base, node.lineno))
    return res

def internal(mod:str)->set:
    return {m.split('.')[1] for m, _ in imports(mod) if m.startswith('moe_router.') and m.split('.')[1] in FLOORS} - {mod}

def test_every_module_has_a_floor():
    assert set(MODULES) == set(FLOORS), f"modules without a floor, or floors without a module: {set(MODULES) ^ set(FLOORS)}"

def test_imports_only_go_down():
    bad = [f"{m} (floor {FLOORS[m]}) imports {d} (floor {FLOORS[d]})" for m in MODULES for d in internal(m) if FLOORS[d] > FLOORS[m]]
    assert not bad, '\n'.join(bad)

def test_no_import_circle():
    graph = {m: internal(m) for m in MODULES}
    def visit(m, path):
        if m in path: raise AssertionError(f"import circle: {' -> '.join(path[path.index(m):] + [m])}")
        for d in sorted(graph[m]): visit(d, path + [m])
    for m in MODULES: visit(m, [])

def test_modal_only_in_cloud():
    "Modal's app, image, volumes and functions live in `cloud`; `offline` is the harness that runs them without Modal"
    bad = [f"moe_router/{m}.py:{ln} imports {i}" for m in MODULES if m not in ('cloud', 'offline')
           for i, ln in imports(m) if i == 'modal' or i.startswith('modal.')]
    assert not bad, '\n'.join(bad)

def test_console_scripts_point_at_cli():
    import tomllib
    scripts = tomllib.loads((PKG.parent/'pyproject.toml').read_text())['project']['scripts']
    assert all(v.startswith('moe_router.cli:') for v in scripts.values()), scripts

@pytest.mark.parametrize('mod', ['flags', 'toolcall', 'records', 'routing', 'history', 'datagen', 'screens', 'synth', 'ocr',
                                 'metrics', 'figures'])
def test_data_half_imports_no_torch(mod):
    "The data half starts without torch, transformers or modal"
    code = (f"import sys, moe_router.{mod}; heavy = [m for m in ('torch', 'transformers', 'modal') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == '', f"import moe_router.{mod} loads {out}"

def test_function_bodies_fit_a_screen():
    "No function body over 40 lines"
    long = []
    for m in MODULES:
        for node in ast.walk(ast.parse((PKG/f'{m}.py').read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.body[0].lineno + 1
                if n > 40: long.append(f"{m}.{node.name}: {n} lines")
    assert not long, '\n'.join(long)

def test_no_unused_imports():
    "No module imports a name it never uses (pyflakes' `imported but unused`; nbdev's exported import cells gather them)"
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
    import io
    out = io.StringIO()
    for m in MODULES: check((PKG/f'{m}.py').read_text(), f'moe_router/{m}.py', Reporter(out, io.StringIO()))
    unused = [l for l in out.getvalue().splitlines() if 'imported but unused' in l]
    assert not unused, '\n'.join(unused)
