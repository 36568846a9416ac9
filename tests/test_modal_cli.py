"""The original system's and the README's `modal` command lines, through Modal's own CLI: `modal.cli.run.run` resolves
the file and the entrypoint and builds the click command as `modal run` does; only the network is taken out
(`moe_router.offline`: the app run is a no-op, `.remote()` runs as `.local()` with the caller's settings cleared,
volume paths map to local directories). Tiny data, the tiny backbone."""
import json, os, re, shlex, shutil, sys
from contextlib import nullcontext
from pathlib import Path
import pytest
from click.testing import CliRunner
from moe_router.offline import offline
from moe_router.shards import shard_bounds

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent/'shared'/'seeds'
SEED_DS, SEED_RUN = 'routing_20251125_052946', 'routing-20251125-052946'

# Every `modal` line of the original system's documentation (claimhawk/qwen3-vl-computer-use-mole-server: its
# `modal/generate.py`, `modal/stacked_inference.py` and `modal/router_train.py`) that names this project's entry files,
# as written there (placeholders excepted).
SEED_LINES = {
    '001': ['modal run modal/generate.py --samples-per-adapter 500 --test-per-adapter 25'],
    '002': [f'modal run modal/stacked_inference.py --routing-run {SEED_RUN} --routing-dataset datasets/{SEED_DS} --max-samples 10'],
    '003': ['modal run modal/router_train.py --dataset-dir /datasets/routing_20251124_143022',
            'modal run modal/router_train.py --dataset-dir /datasets/routing_20251124_143022 --epochs 100 --batch-size 8 --lr 1e-4 --patience 5 --min-delta 0.001',
            'modal run modal/router_train.py --data-path /datasets/routing_20251124_143022/train.jsonl --eval-data-path /datasets/routing_20251124_143022/val.jsonl',
            'modal run modal/router_train.py --data-path /data/routing-train.jsonl --eval-data-path /data/routing-eval.jsonl',
            'modal run modal/router_train.py',
            'modal run modal/router_train.py --dataset-dir /datasets/routing_20251124_160000 --epochs 200 --batch-size 16 --lr 1e-4 --patience 5',
            'modal run modal/router_train.py --mode eval --dataset-dir /datasets/routing_20251124_160000',
            'modal serve modal/router_train.py::tensorboard']}
# Lines that need what no test machine has (the experts' real datasets, 500 per adapter): parsed, their calls recorded.
PARSE_ONLY = {'modal run modal/generate.py --samples-per-adapter 500 --test-per-adapter 25'}

@pytest.fixture(scope='module')
def vols(tmp_path_factory):
    "Local directories standing in for the volumes, with a tiny routing dataset under the original's names"
    from moe_router.synth import make_synthetic_experts
    from moe_router.datagen import build_routing_dataset
    t = tmp_path_factory.mktemp('vols'); ds = t/'datasets'
    make_synthetic_experts(ds, per_expert=16, seed=0)
    first = build_routing_dataset({n: ds/n for n in ('calendar', 'claim-window', 'provider-select')}, ds/'routing_20251124_143022',
                                  train_samples=8, eval_samples=3, ocr_samples=0, log=None, progress=False)
    for name in ('routing_20251124_160000', SEED_DS, 'routing_latest'): shutil.copytree(first, ds/name)
    (t/'data').mkdir(); shutil.copy(first/'train.jsonl', t/'data'/'routing-train.jsonl'); shutil.copy(first/'val.jsonl', t/'data'/'routing-eval.jsonl')
    for m in ('output', 'checkpoints', 'history', 'lora-training'): (t/m).mkdir()
    return t

def mounts(t): return {f'/{m}': t/m for m in ('datasets', 'output', 'checkpoints', 'history', 'lora-training', 'data')}

def modal_cli(line:str, t:Path, monkeypatch, record:list=None):
    "Run `line` through Modal's own `modal run`/`modal serve` resolution and click parsing, offline; (exit code, output)"
    import modal, modal.cli.run as mr
    from modal.cli.import_refs import import_and_filter, parse_import_ref
    from moe_router import cloud
    argv = shlex.split(line)[1:]
    monkeypatch.chdir(ROOT)
    if argv[0] in ('serve', 'deploy'):   # resolution only: the web function or the app, as `modal serve`/`deploy` find it
        ref = parse_import_ref(argv[1], use_module_mode=argv[1] == '-m', command=f'modal {argv[0]}')
        runnable, cmds, _ = import_and_filter(ref, base_cmd=f'modal {argv[0]}', accept_local_entrypoint=False, accept_webhook=True)
        return (0 if runnable is not None else 1), repr(runnable)
    monkeypatch.setattr(mr, 'run_app', lambda app, **kw: nullcontext())
    monkeypatch.setattr(cloud, 'RUN_ROOTS', (str(t/'output'), str(t/'checkpoints')))
    monkeypatch.setattr(cloud, 'DATA_ROOT', str(t/'datasets'))
    monkeypatch.setenv('MOE_ROUTER_IMAGE_ROOTS', str(t/'datasets'))
    with offline(mounts(t)):
        if record is not None:
            monkeypatch.setattr(modal.Function, 'remote', lambda self, *a, **kw: record.append((self, a, kw)) or {})
        r = CliRunner().invoke(mr.run, argv[1:], catch_exceptions=True)
    if r.exception and not isinstance(r.exception, SystemExit): raise r.exception
    return r.exit_code, r.output

@pytest.fixture
def caller(monkeypatch, vols):
    "The caller's settings (the tiny backbone, the original `router_train.py`'s output path): they must reach the functions"
    monkeypatch.setenv('BASE_MODEL_ID', 'tiny'); monkeypatch.setenv('ROUTER_OUT', '/output/router-head.pt')
    monkeypatch.setenv('TRAIN_DATA', '/datasets/routing_latest/train.jsonl'); monkeypatch.setenv('VAL_DATA', '/datasets/routing_latest/val.jsonl')
    return vols

def test_seed_lines_are_in_the_seeds():
    "The lines above are the original documentation's own (checked against its text where it is present)"
    if not SEEDS.is_dir(): pytest.skip('the seed documents are not beside this checkout')
    text = re.sub(r'\\\n\s*', '', ' '.join(p.read_text() for p in SEEDS.glob('0*.txt')))
    text = re.sub(r'[ \t]+', ' ', text)
    for lines in SEED_LINES.values():
        for l in lines: assert l in text, l

def test_modal_folder_does_not_shadow_modal(monkeypatch):
    monkeypatch.chdir(ROOT); assert not (ROOT/'modal'/'__init__.py').exists()
    import subprocess
    out = subprocess.run([sys.executable, '-c', 'import modal; print(modal.__file__)'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert 'site-packages' in out, out

@pytest.mark.parametrize('line', [l for ls in SEED_LINES.values() for l in ls if l not in PARSE_ONLY])
def test_seed_line_runs(line, caller, monkeypatch):
    if 'stacked_inference' in line:   # as in the original `stacked_inference.py`: a router trained under the run name
        from moe_router.head import train_head
        run = caller/'output'/SEED_RUN
        if not (run/'router-head.pt').exists():
            train_head(str(caller/'datasets'/SEED_DS), str(run), 'tiny', epochs=3, lr=1e-3, log=None, progress=False)
        import moe_router.infer as inf   # the checkpoints volume: every expert answered by the base (no task LoRAs here)
        monkeypatch.setattr(inf, 'read_loras', lambda path=None, *a, **kw: {n: 'base' for n in ('calendar', 'claim-window', 'provider-select', 'ocr')})
    rc, out = modal_cli(line, caller, monkeypatch)
    print(f"$ {line}\n{out}")
    assert rc == 0, out

def test_seed_001_line_parses(caller, monkeypatch):
    calls = []
    rc, out = modal_cli('modal run modal/generate.py --samples-per-adapter 500 --test-per-adapter 25', caller, monkeypatch, calls)
    assert rc == 0, out
    from moe_router import cloud
    (f1, _, kw1), (f2, _, kw2) = calls
    assert f1 is cloud.verify_datasets and (kw1['history'], kw1['env']['BASE_MODEL_ID']) == ('/history', 'tiny')
    assert f2 is cloud.assemble_dataset and (kw2['train_samples'], kw2['eval_samples'], kw2['root']) == (500, 25, '/lora-training')
    print(f"$ modal run modal/generate.py --samples-per-adapter 500 --test-per-adapter 25\n  -> verify_datasets.remote({kw1})\n  -> assemble_dataset.remote({kw2})")

@pytest.mark.parametrize('line,msg', [
    ('modal run modal/router_train.py --epochs 0', 'error: --epochs 0 must be greater than 0'),
    ('modal run modal/router_train.py --epochs 2.5', 'error: --epochs 2.5: the head trains whole epochs'),
    ('modal run modal/generate.py --samples-per-adapter -1', 'error: --samples-per-adapter -1 must be at least 1'),
    ('modal run modal/router_train.py --mode eval --shards 0', 'error: --shards 0 must be at least 1'),
    ('modal run modal/stacked_inference.py --routing-dataset datasets/x --max-samples 0', 'error: --max-samples 0 must be at least 1')])
def test_bad_seed_flags_exit_2(line, msg, caller, monkeypatch):
    calls = []
    rc, out = modal_cli(line, caller, monkeypatch, calls)
    assert (rc, out.strip().splitlines()) == (2, [out.strip()]) and out.startswith(msg), out
    assert calls == []   # nothing reached Modal

def test_history_record_pointing_nowhere_exits_2(caller, monkeypatch):
    h = caller/'history'/'calendar'; h.mkdir(exist_ok=True)
    (h/'runs.jsonl').write_text(json.dumps({'dataset_name': 'calendar--gone--20250101_000000'}) + '\n')
    rc, out = modal_cli('modal run modal/generate.py --samples-per-adapter 4 --test-per-adapter 1', caller, monkeypatch)
    errors = [l for l in out.splitlines() if l.startswith('error:')]
    assert rc == 2 and len(errors) == 1 and out.strip().endswith(errors[0]), out   # the history lookup says what it took, then one error
    assert 'calendar--gone--20250101_000000' in errors[0] and 'not on the volume' in errors[0], out

def test_file_mode_and_deploy_resolve(monkeypatch):
    "`modal run moe_router/cloud.py::X` and `modal deploy` on the files import (no relative-import failure)"
    from modal.cli.import_refs import import_app_from_ref, parse_import_ref
    monkeypatch.chdir(ROOT)
    for ref in ('moe_router/cloud.py', 'modal/stacked_inference.py', 'modal/router_train.py', 'modal/generate.py'):
        assert import_app_from_ref(parse_import_ref(ref, command='modal deploy')).name == 'moe-router'

def test_shards_3_equal_one_run(vols, monkeypatch, capsys):
    "`--shards 3`: features and evaluation merged from three `.map`ped shards are identical to one run"
    import numpy as np, torch
    from moe_router import cloud
    from moe_router.backbone import load_backbone
    from moe_router.routing import load_split
    from moe_router.evaluate import evaluate_dir
    from moe_router.head import pooled_features, train_head
    ds = vols/'datasets'/'routing_20251124_143022'
    samples, _ = load_split(ds, 'train'); labels = ['calendar', 'claim-window', 'provider-select', 'ocr']
    m, proc = load_backbone('tiny')
    one = pooled_features(m, proc, samples, labels, 'last', 8)
    with offline(): merged = cloud.sharded_features(3, labels, 'last', 'tiny', 8)(samples)
    assert torch.equal(one, merged)
    head = train_head(str(ds), str(vols/'shard-head'), 'tiny', epochs=3, lr=1e-3, log=None, progress=False)['path']
    with offline():   # the head trained on features from 3 shards is the head trained on one run's
        h3 = cloud.modal_train_router_head.remote(str(ds), str(vols/'shard-head3'), 'tiny', shards=3, epochs=3, lr=1e-3, log=None, progress=False)
    h1 = torch.load(head, weights_only=True)['state_dict']; h3s = torch.load(h3['path'], weights_only=True)['state_dict']
    assert all(torch.equal(h1[k], h3s[k]) for k in h1)
    single = evaluate_dir(head, ds, 'test', progress=False, batch_size=4)
    test_s, _ = load_split(ds, 'test')
    assert [b - a for a, b in shard_bounds(len(test_s), 3, 4)] == [4, 4, 1]
    with offline():
        sharded = evaluate_dir(cloud.sharded_router(head, test_s, 3, batch_size=4), ds, 'test', info=dict(router=head), progress=False, batch_size=4)
    assert np.array_equal(single.probs, sharded.probs)
    drop = lambda d: {k: v for k, v in d.items() if k not in ('name',)}
    assert json.dumps(drop(single.metrics), sort_keys=True, default=str) == json.dumps(drop(sharded.metrics), sort_keys=True, default=str)
    with capsys.disabled():
        print(f"\n--shards 3: features {tuple(one.shape)} identical (torch.equal), max |diff| {float((one - merged).abs().max()):g}; "
              f"eval probs identical over {len(test_s)} samples, accuracy {single.metrics['accuracy']} = {sharded.metrics['accuracy']}, metrics JSON equal")

def readme_modal_lines()->list:
    "Every `modal run|deploy|serve` command line the README shows"
    text = (ROOT/'README.md').read_text()
    return sorted({m.strip().rstrip('`') for m in re.findall(r'(?m)(?:^\s*|`)(modal (?:run|deploy|serve) [^`\n]+)', text) if '...' not in m})

@pytest.mark.parametrize('line', readme_modal_lines())
def test_readme_modal_line_parses(line, monkeypatch):
    "Resolved as `modal` resolves it and its flags parsed by the click command `modal run` builds (`test_seed_line_runs` runs the original's lines)"
    import modal.cli.run as mr
    from modal.cli.import_refs import import_and_filter, import_app_from_ref, parse_import_ref
    monkeypatch.chdir(ROOT)
    argv = shlex.split(line)[1:]; cmd, m = argv[0], argv[1] == '-m'
    ref = parse_import_ref(argv[2 if m else 1], use_module_mode=m, command=f'modal {cmd}')
    if cmd == 'deploy': assert import_app_from_ref(ref).name == 'moe-router'; return
    runnable, _, _ = import_and_filter(ref, base_cmd=f'modal {cmd}', accept_local_entrypoint=cmd == 'run', accept_webhook=cmd == 'serve')
    assert runnable is not None, line
    if cmd == 'run': mr._get_click_command_for_local_entrypoint(runnable.app, runnable).make_context('run', argv[3 if m else 2:])

def test_backend_modal_carries_settings(caller, monkeypatch):
    "`moe-router-train --backend modal`: no --model and no --out, so BASE_MODEL_ID=tiny and ROUTER_OUT must reach the function"
    from moe_router import cloud
    from moe_router.cli import run_train
    with offline(mounts(caller)):
        res = run_train('head', 'modal', dataset_dir='/datasets/routing_20251124_143022', epochs=2, lr=1e-3, log=None, progress=False)
    assert res['path'] == str(caller/'output'/'router-head.pt') and (caller/'output'/'train-results.json').is_file()

def test_stacked_inference_carries_settings(caller, monkeypatch):
    "Stacked inference with no router named: ROUTER_OUT (and BASE_MODEL_ID) from the caller pick it"
    import moe_router.infer as inf
    from moe_router import cloud
    from moe_router.head import train_head
    head = caller/'output'/'env-head'/'router-head.pt'
    if not head.exists(): train_head(str(caller/'datasets'/'routing_latest'), str(head), 'tiny', epochs=2, lr=1e-3, log=None, progress=False)
    monkeypatch.setattr(inf, 'read_loras', lambda path=None, *a, **kw: {n: 'base' for n in ('calendar', 'claim-window', 'provider-select', 'ocr')})
    monkeypatch.setenv('ROUTER_OUT', str(head))
    with offline():
        out = cloud.StackedInference(env=json.dumps(cloud.caller_env())).infer.remote('Click December 3 in the calendar')
    assert out['status'] == 200 and out['router_choice'] in ('calendar', 'claim-window', 'provider-select', 'ocr'), out
