"""One home per default: each `moe-router-*` flag and each Modal entrypoint parameter that a library function also has
takes that function's default (and, on the command line, its help and type), or is listed as the command's own."""
import importlib, inspect, tomllib
from pathlib import Path
import pytest
from moe_router.flags import flag_drift

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINTS = ('generate_routing_data', 'router_train', 'stacked_inference')   # the `modal run` lines users type
CHECKED = {}

def commands()->dict:
    "`{console script: its function}` from pyproject.toml"
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    return {name: ref for name, ref in scripts.items()}

def command(ref:str):
    mod, fn = ref.split(':'); return inspect.unwrap(getattr(importlib.import_module(mod), fn))

@pytest.mark.parametrize('name', sorted(commands()))
def test_command_flags_come_from_the_library(name):
    rows = flag_drift(command(commands()[name]))
    CHECKED[name] = rows
    bad = [f"--{r['flag'].replace('_', '-')}: {r['default']!r} here, {r['library']!r} in the library" for r in rows if r['same'] is False]
    assert not bad, f"{name}: " + '; '.join(bad)

@pytest.mark.parametrize('name', ENTRYPOINTS)
def test_modal_entrypoint_parameters_come_from_the_library(name):
    from moe_router import cloud
    rows = flag_drift(getattr(cloud, name).info.raw_f)
    CHECKED[f'modal {name}'] = rows
    bad = [f"--{r['flag'].replace('_', '-')}: {r['default']!r} here, {r['library']!r} in the library" for r in rows if r['same'] is False]
    assert not bad, f"{name}: " + '; '.join(bad)

def test_zz_flags_summary(capsys):
    "How many flags and parameters were compared with the library default behind them"
    if not CHECKED: pytest.skip('the comparisons did not run in this process')
    rows = [r for rs in CHECKED.values() for r in rs]
    same, own = sum(r['same'] is True for r in rows), sum(r['same'] is None for r in rows)
    with capsys.disabled():
        print(f"\nflags: {len(rows)} flags and parameters of {len(CHECKED)} commands and entrypoints compared with their library "
              f"functions: {same} take the library's default, {own} are the command's own")
    assert same + own == len(rows) and same > 0
