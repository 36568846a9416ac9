"""The reliability sweep: every bad input the issues name, through the console scripts a researcher types.

For each case: the exit code, the message on stderr (it must name the file, and the line and field where they
exist), no traceback, and the files left behind (none: no output directory, no `.partial` directory).
Two more: a dataset build killed with SIGKILL leaves nothing that looks complete, and the same seed gives
byte-identical dataset files.
"""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from moe_router.synth import make_synthetic_experts
from moe_router.datagen import build_routing_dataset, load_split
from moe_router.config import DatasetError

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONWARNINGS': 'ignore'}
TRIED = []   # (case id, exit code, ok)

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "Synthetic experts, a routing dataset, a small trained head, and fake task adapters, built once"
    d = tmp_path_factory.mktemp('world')
    experts = make_synthetic_experts(d/'experts', per_expert=12, seed=0)
    ds = build_routing_dataset(experts, d/'routing', train_samples=6, eval_samples=3, ocr_samples=4, log=None)
    from moe_router.train import train_head
    head = train_head(ds, d/'head', model='tiny', epochs=2, lr=1e-3, log=None, progress=False)['path']
    for name in ('calendar', 'claim-window', 'provider-select'):
        a = d/'adapters'/name; a.mkdir(parents=True)
        (a/'adapter_config.json').write_text(json.dumps({'base_model_name_or_path': 'tiny', 'peft_type': 'LORA'}))
        (a/'adapter_model.safetensors').write_bytes(b'')
    return dict(root=d, experts=experts, ds=ds, head=head, adapters=d/'adapters')

def lines(p): return Path(p).read_text().splitlines()
def write_lines(p, ls): Path(p).write_text('\n'.join(ls) + '\n')

def expert_copy(w, tmp, edit=None, name='calendar'):
    "A copy of one synthetic expert dataset, with `edit(list of JSONL lines) -> lines` applied to train.jsonl"
    dst = tmp/name; shutil.copytree(w['experts'][name], dst)
    if edit: write_lines(dst/'train.jsonl', edit(lines(dst/'train.jsonl')))
    return dst

def gen_args(w, tmp, cal, *extra, out='out', train=4, evals=2):
    return ['moe-router-generate', '--calendar-dataset', str(cal), '--claim-window-dataset', str(w['experts']['claim-window']),
            '--provider-select-dataset', str(w['experts']['provider-select']), '--train-samples', str(train), '--eval-samples', str(evals),
            '--output-dir', str(tmp/out), '--no-progress', *extra]

def drop_key(key, line_no=2):
    def edit(ls):
        r = json.loads(ls[line_no-1]); r.pop(key); ls[line_no-1] = json.dumps(r); return ls
    return edit

def drop_turn(role, line_no=2):
    def edit(ls):
        r = json.loads(ls[line_no-1]); r['conversations'] = [t for t in r['conversations'] if t['from'] != role]
        ls[line_no-1] = json.dumps(r); return ls
    return edit

def corrupt_line(line_no=3):
    def edit(ls): ls[line_no-1] = ls[line_no-1][:40]; return ls
    return edit

def remove_image(w, tmp):
    cal = expert_copy(w, tmp); r = json.loads(lines(cal/'train.jsonl')[0]); (cal/r['image']).unlink(); return cal, r['image']

def registry(tmp, text):
    p = tmp/'adapters.yaml'; p.write_text(text); return p

GOOD_REG = """adapters:
  calendar: {label: 0}
  claim-window: {label: 1}
  provider-select: {label: 2}
  ocr: {label: 3, optional: true}
"""

def relabel(w, tmp):
    "A copy of the routing dataset whose label map differs from the registry"
    d = tmp/'relabelled'; shutil.copytree(w['ds'], d)
    m = json.loads((d/'metadata.json').read_text()); m['label_map'] = {'calendar': 1, 'claim-window': 0, 'provider-select': 2, 'ocr': 3}
    (d/'metadata.json').write_text(json.dumps(m)); return d

def empty_split(w, tmp):
    d = tmp/'empty'; shutil.copytree(w['ds'], d); (d/'test.jsonl').write_text(''); return d

def ds_missing_image(w, tmp):
    "A copy of the routing dataset whose expert screenshots live in a copy with one test screenshot deleted"
    ex = tmp/'experts'; shutil.copytree(w['root']/'experts', ex)
    d = tmp/'ds'; shutil.copytree(w['ds'], d)
    m = json.loads((d/'metadata.json').read_text()); m['image_roots'] = [str(ex)]; (d/'metadata.json').write_text(json.dumps(m))
    first = next(json.loads(l) for l in lines(d/'test.jsonl') if json.loads(l).get('image'))
    (ex/first['image']).unlink(); return d

def loras(w, tmp, **override):
    "A loras.json over the fake adapters, with entries replaced by `override`"
    spec = {n: str(w['adapters']/n) for n in ('calendar', 'claim-window', 'provider-select')} | {'ocr': 'base'} | override
    p = tmp/'loras.json'; p.write_text(json.dumps(spec)); return p

def bad_adapter(w, tmp, config_text):
    a = tmp/'bad-adapter'; shutil.copytree(w['adapters']/'calendar', a); (a/'adapter_config.json').write_text(config_text); return a

def infer_args(w, tmp, lj, *extra):
    return ['moe-router-infer', '--prompt', 'Click December 3 in the calendar', '--loras', str(lj), '--router', w['head'],
            '--model', 'tiny', '--json-out', str(tmp/'out.json'), *extra]

# Each case: (id, setup(world, tmp) -> argv, expected exit code, stderr regex, paths (relative to tmp) that must not exist)
CASES = [
    # --- 01_datagen / moe-router-generate
    ('generate: malformed JSON line', lambda w, t: gen_args(w, t, expert_copy(w, t, corrupt_line(3))), 2,
     r'calendar/train\.jsonl:3\b.*JSON', ['out']),
    ('generate: record missing conversations', lambda w, t: gen_args(w, t, expert_copy(w, t, drop_key('conversations', 2))), 2,
     r'calendar/train\.jsonl:2\b.*conversations', ['out']),
    ('generate: record missing its human turn', lambda w, t: gen_args(w, t, expert_copy(w, t, drop_turn('human', 2))), 2,
     r'calendar/train\.jsonl:2\b.*human', ['out']),
    ('generate: missing image file', lambda w, t: gen_args(w, t, remove_image(w, t)[0]), 2, r'calendar.*images/calendar_\d+\.png', ['out']),
    ('generate: empty file', lambda w, t: gen_args(w, t, (t/'empty.jsonl', (t/'empty.jsonl').write_text(''))[0]), 2,
     r'empty\.jsonl.*(empty|no records)', ['out']),
    ('generate: fewer records than requested', lambda w, t: gen_args(w, t, w['experts']['calendar'], train=40, evals=10), 2, r'calendar/train\.jsonl.*12 usable records, 50 requested', ['out']),
    ('generate: unknown adapter name', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--expert', f"bogus={w['experts']['calendar']}"), 2,
     r"bogus", ['out']),
    ('generate: registry with duplicate labels', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config',
     str(registry(t, GOOD_REG.replace('claim-window: {label: 1}', 'claim-window: {label: 0}')))), 2, r'adapters\.yaml.*label', ['out']),
    ('generate: registry with non-contiguous labels', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config',
     str(registry(t, GOOD_REG.replace('ocr: {label: 3', 'ocr: {label: 7')))), 2, r'adapters\.yaml.*contiguous', ['out']),
    ('generate: registry with an unknown key', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config',
     str(registry(t, GOOD_REG.replace('calendar: {label: 0}', 'calendar: {label: 0, lable: 1}')))), 2, r'adapters\.yaml.*lable', ['out']),
    ('generate: registry with a name that is not a slug', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config',
     str(registry(t, GOOD_REG.replace('calendar: {label: 0}', '"Calendar View!": {label: 0}')))), 2, r'adapters\.yaml.*Calendar View!', ['out']),
    ('generate: --train-val-split 1.5', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--train-val-split', '1.5'), 2,
     r'train.val.split', ['out']),
    ('generate: --train-val-split 0', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--train-val-split', '0'), 2,
     r'train.val.split', ['out']),
    ('generate: output directory exists', lambda w, t: ((t/'out').mkdir(), gen_args(w, t, w['experts']['calendar']))[1], 2,
     r'out.*already exists', []),
    # --- 02_ocr_synth / moe-router-synth
    ('synth: output directory exists', lambda w, t: ((t/'syn').mkdir(), ['moe-router-synth', '--out', str(t/'syn'), '--per-expert', '2'])[1], 2,
     r'syn.*already exists', []),
    ('synth: --out missing', lambda w, t: ['moe-router-synth', '--per-expert', '2'], 2, r'--out', []),
    # --- moe-router-upload
    ('upload: not a routing dataset', lambda w, t: ['moe-router-upload', str(w['experts']['calendar']), '--dry-run'], 2,
     r'calendar.*metadata\.json', []),
    # --- 03_train_modal / moe-router-train
    ('train: unknown --router', lambda w, t: ['moe-router-train', '--router', 'forest', '--dataset-dir', str(w['ds']), '--model', 'tiny',
     '--out', str(t/'out')], 2, r"forest", ['out']),
    ('train: unknown --backend', lambda w, t: ['moe-router-train', '--backend', 'slurm', '--dataset-dir', str(w['ds']), '--model', 'tiny',
     '--out', str(t/'out')], 2, r"slurm", ['out']),
    ('train: missing dataset directory', lambda w, t: ['moe-router-train', '--dataset-dir', str(t/'nope'), '--model', 'tiny',
     '--out', str(t/'out')], 2, r'nope', ['out']),
    ('train: label map differs from the registry', lambda w, t: ['moe-router-train', '--dataset-dir', str(relabel(w, t)), '--model', 'tiny',
     '--out', str(t/'out')], 2, r"metadata\.json.*'calendar': 1.*'calendar': 0|metadata\.json.*'calendar': 0.*'calendar': 1", ['out']),
    ('train: unknown model id', lambda w, t: ['moe-router-train', '--dataset-dir', str(w['ds']), '--model', 'no such model',
     '--out', str(t/'out')], 2, r'no such model', ['out']),
    # --- 04_eval_confusion / moe-router-eval
    ('eval: missing dataset directory', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', str(t/'nope'),
     '--out', str(t/'out')], 2, r'nope', ['out']),
    ('eval: empty split', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', str(empty_split(w, t)),
     '--out', str(t/'out')], 2, r'test\.jsonl.*no samples', ['out']),
    ('eval: router labels differ from the dataset', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', str(relabel(w, t)),
     '--out', str(t/'out'), '--no-baseline'], 2, r"router-head\.pt: label map \{'calendar': 0.*differs from the dataset's \{'claim-window': 0", ['out']),
    ('eval: a test screenshot is missing', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', str(ds_missing_image(w, t)),
     '--out', str(t/'out'), '--no-baseline'], 2, r"image '[^']+\.png' does not resolve to a file", ['out']),
    ('eval: missing router checkpoint', lambda w, t: ['moe-router-eval', '--router', str(t/'router-head.pt'), '--dataset-dir', str(w['ds']),
     '--out', str(t/'out')], 2, r'router-head\.pt', ['out']),
    ('eval: unknown --compare file format', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', str(w['ds']),
     '--out', str(t/'out'), '--compare', str((t/'other.json', (t/'other.json').write_text('{"hello": 1}'))[0])], 2, r'other\.json.*hello', ['out']),
    # --- 05_stacked_infer / moe-router-infer
    ('infer: missing adapter path', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(t/'gone'))), 2, r'calendar.*gone', ['out.json']),
    ('infer: corrupt adapter_config.json', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(bad_adapter(w, t, '{"base_model_name_or_path": ')))), 2,
     r'bad-adapter/adapter_config\.json', ['out.json']),
    ('infer: adapter trained on a different base', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(bad_adapter(w, t,
     json.dumps({'base_model_name_or_path': 'Qwen/Qwen2-VL-2B-Instruct', 'peft_type': 'LORA'}))))), 2, r'calendar.*Qwen2-VL-2B-Instruct.*tiny|calendar.*tiny.*Qwen2-VL-2B', ['out.json']),
    ('infer: expert without an adapter and no fallback', lambda w, t: infer_args(w, t, loras(w, t, ocr=None)), 2, r'ocr.*fallback', ['out.json']),
    ('infer: missing image file', lambda w, t: infer_args(w, t, loras(w, t), '--image', str(t/'shot.png')), 2, r'shot\.png', ['out.json']),
    ('infer: adapter files PEFT cannot load', lambda w, t: infer_args(w, t, loras(w, t)), 2, r'adapters/calendar.*target_modules', ['out.json']),
    ('infer: unknown --expert', lambda w, t: infer_args(w, t, loras(w, t, calendar='base', **{'claim-window': 'base', 'provider-select': 'base'}),
     '--expert', 'weather'), 2, r'weather', ['out.json']),
    # --- 06_demo / moe-router-demo
    ('demo: a real model without --backend modal', lambda w, t: ['moe-router-demo', '--out', str(t/'out'), '--model', 'Qwen/Qwen3-VL-8B-Instruct'],
     2, r'--model Qwen/Qwen3-VL-8B-Instruct needs --backend modal', ['out']),
    ('demo: unknown --backend', lambda w, t: ['moe-router-demo', '--out', str(t/'out'), '--backend', 'slurm'], 2, r"slurm", ['out']),
    ('demo: --out holds something else', lambda w, t: ((t/'out').mkdir(), (t/'out'/'notes.txt').write_text('mine'),
     ['moe-router-demo', '--out', str(t/'out'), '--quick'])[2], 2, r'out: exists and is not a demo run directory', []),
]
if not os.environ.get('MODAL_TOKEN_ID'):  # without credentials the modal backend must stop before writing anything
    CASES.append(('demo: --backend modal without Modal credentials', lambda w, t: ['moe-router-demo', '--out', str(t/'out'), '--backend', 'modal',
                  '--model', 'Qwen/Qwen3-VL-8B-Instruct'], 2, r'modal setup', ['out']))

@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, world, tmp_path):
    "Exit code, a located message without a traceback, and nothing half-written"
    name, setup, code, pattern, absent = case
    argv = setup(world, tmp_path)
    r = subprocess.run([str(BIN/argv[0]), *argv[1:]], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    ok = r.returncode == code and 'Traceback' not in r.stderr
    TRIED.append((name, r.returncode, ok))
    assert r.returncode == code, f"{name}: exit {r.returncode}, expected {code}\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
    assert 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.lstrip().startswith('error:') or 'error:' in r.stderr, r.stderr
    assert re.search(pattern, r.stderr, re.S), f"{name}: message does not match {pattern!r}:\n{r.stderr}"
    for a in absent: assert not (tmp_path/a).exists(), f"{name}: left {a} behind"
    assert not list(tmp_path.rglob('*.partial')), f"{name}: left a .partial directory: {list(tmp_path.rglob('*.partial'))}"

def test_skip_invalid_counts_and_reports(world, tmp_path):
    "With --skip-invalid a bad record and a missing image are skipped, counted, reported and recorded"
    cal = expert_copy(world, tmp_path, drop_key('conversations', 2))
    r = json.loads(lines(cal/'train.jsonl')[0]); (cal/r['image']).unlink()
    p = subprocess.run([str(BIN/'moe-router-generate'), *gen_args(world, tmp_path, cal, '--skip-invalid')[1:]],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.search(r'skipped', p.stdout + p.stderr), p.stdout
    skipped = json.loads((tmp_path/'out'/'metadata.json').read_text())['skipped']['calendar']
    assert sum(skipped.values()) >= 2 if isinstance(skipped, dict) else skipped >= 2, skipped

def test_sigkill_mid_build_leaves_nothing_complete(world, tmp_path):
    "A build killed with SIGKILL while writing leaves no directory that looks like a dataset, and a rerun succeeds"
    slow = ("import sys, time, moe_router.datagen as g\n"
            "orig = g.write_jsonl\n"
            "def slow(*a, **k):\n    r = orig(*a, **k); print('wrote', a[0], flush=True); time.sleep(30); return r\n"
            "g.write_jsonl = slow\n"
            f"g.build_routing_dataset({ {n: str(d) for n, d in world['experts'].items()}!r}, "
            f"{str(tmp_path/'out')!r}, train_samples=4, eval_samples=2, log=None)\n")
    p = subprocess.Popen([sys.executable, '-c', slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    first = p.stdout.readline()                  # the first split file is written; the build is mid-way
    assert first.startswith('wrote'), p.stderr.read()
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path/'out').exists(), 'a killed build left the final dataset directory'
    for d in tmp_path.glob('out*'):              # what is left is the .partial directory, and the loader refuses it
        assert d.name.endswith('.partial') and not (d/'metadata.json').exists()
        with pytest.raises(DatasetError, match='metadata.json'): load_split(d, 'train')
    r = subprocess.run([str(BIN/'moe-router-generate'), *gen_args(world, tmp_path, world['experts']['calendar'])[1:]],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'out'/'metadata.json').is_file() and not list(tmp_path.glob('*.partial'))
    TRIED.append(('SIGKILL mid-build', p.returncode, True))

def test_same_seed_byte_identical(world, tmp_path):
    "Two builds with the same seed write byte-identical split files; metadata differs only in its timestamps"
    outs = []
    for i in range(2):
        out = tmp_path/f'run{i}'
        argv = gen_args(world, tmp_path, world['experts']['calendar'], '--seed', '7', '--ocr-samples', '4', out=f'run{i}')
        r = subprocess.run([str(BIN/argv[0]), *argv[1:]], capture_output=True, text=True, env=ENV, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    for f in ('data.jsonl', 'train.jsonl', 'val.jsonl', 'test.jsonl'):
        assert (outs[0]/f).read_bytes() == (outs[1]/f).read_bytes(), f
    m0, m1 = (json.loads((o/'metadata.json').read_text()) for o in outs)
    assert {k for k in m0 if m0[k] != m1.get(k)} == {'created_at', 'dataset_dir'}
    TRIED.append(('same seed, byte-identical', 0, True))

def test_zz_summary(capsys):
    "How many bad inputs were tried, and that none left half-written output"
    if not TRIED: pytest.skip('the sweep did not run (a subset of tests was selected)')
    n, ok = len(TRIED), sum(o for *_, o in TRIED)
    with capsys.disabled():
        print(f"\nbad-input sweep: {n} cases tried, {ok} exited as expected with a located message, "
              f"{n-ok} failed; no case left a half-written output behind")
    assert ok == n, [name for name, _, o in TRIED if not o]
