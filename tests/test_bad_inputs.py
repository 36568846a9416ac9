"""The reliability sweep: every bad input the issues name, through the console scripts a researcher types.

One table, one row per bad input: the command line, how a copy of a good fixture is broken, the exit code
(2, the commands' convention for a `DatasetError`/`ConfigError`), a pattern the message on stderr must match
(it names the file, and the line and field where they exist), and the outputs that must not appear or must
stay unchanged. Every row also checks that there is no traceback and that the run left nothing behind: the
test directory holds exactly the files it held before (no output directory, no `.partial` directory, no
temporary file, nothing rewritten).

Inputs the code gets wrong today are rows marked `xfail(strict=True)` with the reason, so the suite stays green
and shows the bug; when a bug is fixed its row turns XPASS and fails, and the mark should go.

Two more tests: a dataset build killed with SIGKILL part-way leaves no dataset directory that looks complete
(and a rerun succeeds), and the same seed gives byte-identical dataset files. `test_zz_summary` prints how many
cases were tried.

Speed: loading torch and transformers costs several seconds per command, so the commands run in a warm runner,
a child process that imports the modules once and forks one process per case; each case process runs the
installed console script itself (`runpy` on `.venv/bin/moe-router-...`, argv, cwd, stdout and stderr as given).
`MOE_SWEEP_EXEC=1` runs every case as its own fresh process instead (same results, several times slower).
"""
import base64, json, os, re, select, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from moe_router.synth import make_synthetic_experts
from moe_router.datagen import build_routing_dataset
from moe_router.routing import load_split
from moe_router.config import DatasetError

BIN = Path(sys.executable).parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'PYTHONWARNINGS': 'ignore',
       'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
TRIED = {}   # node id -> dict(name, rc, clear, left, bug)
TIMEOUT = 300

# ---------------------------------------------------------------------------------------------------------------
# Running a console script
# ---------------------------------------------------------------------------------------------------------------
WARM = r'''
import importlib, json, os, runpy, sys, traceback
req, rep = (int(a) for a in sys.argv[1:3])
for m in ('moe_router.datagen', 'moe_router.synth', 'moe_router.routers', 'moe_router.evaluate', 'moe_router.explore', 'moe_router.report', 'moe_router.infer', 'moe_router.cli'):
    importlib.import_module(m)
rf, wf = os.fdopen(req, 'r'), os.fdopen(rep, 'w', buffering=1)
for line in rf:
    job = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                   # the case: the console script, as if exec'd
        code = 1
        try:
            rf.close(); wf.close(); os.chdir(job['cwd'])
            for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, job['out'], os.O_WRONLY|os.O_CREAT|os.O_TRUNC),
                                    (2, job['err'], os.O_WRONLY|os.O_CREAT|os.O_TRUNC)):
                f = os.open(path, flags, 0o644); os.dup2(f, fd); os.close(f)
            sys.argv = job['argv']
            try: runpy.run_path(job['argv'][0], run_name='__main__'); code = 0
            except SystemExit as e:
                if e.code is None: code = 0
                elif isinstance(e.code, int): code = e.code
                else: print(e.code, file=sys.stderr); code = 1
            except BaseException: traceback.print_exc(); code = 1
        finally:
            try: sys.stdout.flush(); sys.stderr.flush()
            except Exception: pass
            os._exit(code)
    wf.write(json.dumps({'pid': pid}) + '\n')
    _, st = os.waitpid(pid, 0)
    wf.write(json.dumps({'rc': os.waitstatus_to_exitcode(st)}) + '\n')
'''

class Warm:
    "A process that has imported moe_router's modules and forks one child per command"
    def __init__(self, logdir):
        self.logdir, self.n = Path(logdir), 0
        r1, w1 = os.pipe(); r2, w2 = os.pipe()
        self.proc = subprocess.Popen([sys.executable, '-c', WARM, str(r1), str(w2)], pass_fds=(r1, w2), env=ENV,
                                     stdout=open(self.logdir/'warm.log', 'w'), stderr=subprocess.STDOUT)
        os.close(r1); os.close(w2)
        self.req, self.rep, self.buf = os.fdopen(w1, 'w', buffering=1), r2, b''

    def _reply(self, timeout):
        end = time.time() + timeout
        while b'\n' not in self.buf:
            left = end - time.time()
            if left <= 0 or not select.select([self.rep], [], [], left)[0]: return None
            chunk = os.read(self.rep, 4096)
            if not chunk: raise RuntimeError(f"warm runner died: {(self.logdir/'warm.log').read_text()[-3000:]}")
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def run(self, argv, cwd, timeout=TIMEOUT):
        self.n += 1; out, err = self.logdir/f'{self.n}.out', self.logdir/f'{self.n}.err'
        self.req.write(json.dumps(dict(argv=[str(BIN/argv[0]), *map(str, argv[1:])], cwd=str(cwd), out=str(out), err=str(err))) + '\n')
        pid = self._reply(60)['pid']
        r = self._reply(timeout)
        if r is None: os.kill(pid, signal.SIGKILL); r = self._reply(60); r['rc'] = 'timeout'
        return subprocess.CompletedProcess(argv, r['rc'], out.read_text(errors='replace'), err.read_text(errors='replace'))

    def close(self):
        self.req.close(); self.proc.wait(30); os.close(self.rep)

def run_exec(argv, cwd, timeout=TIMEOUT):
    "A console script in a fresh process"
    return subprocess.run([str(BIN/argv[0]), *map(str, argv[1:])], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "`run(argv, cwd)` runs a console script (argv[0] is its name) and returns a `CompletedProcess`"
    if os.environ.get('MOE_SWEEP_EXEC'): yield run_exec; return
    w = Warm(tmp_path_factory.mktemp('warm-logs'))
    yield w.run
    w.close()

# ---------------------------------------------------------------------------------------------------------------
# Fixtures, built once
# ---------------------------------------------------------------------------------------------------------------
def snapshot(root):
    "`{relative path: (size, mtime_ns)}` of everything under `root` (directories too)"
    root = Path(root)
    return {str(p.relative_to(root)): (None if p.is_dir() else p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob('*')}

def left_behind(before, after):
    "Paths that appeared, changed or vanished between two snapshots"
    return sorted({k for k in after if k not in before} | {k for k in before if k not in after} |
                  {k for k in after if k in before and after[k] != before[k] and after[k][0] is not None})

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "Synthetic experts, a routing dataset, a small trained head, and fake task adapters, built once"
    d = tmp_path_factory.mktemp('world')
    experts = make_synthetic_experts(d/'experts', per_expert=12, seed=0)
    ds = build_routing_dataset(experts, d/'routing', train_samples=6, eval_samples=3, ocr_samples=4, log=None)
    from moe_router.head import train_head, load_head_checkpoint
    head = train_head(ds, d/'head', model='tiny', epochs=2, lr=1e-3, log=None, progress=False)['path']
    ck = load_head_checkpoint(head)
    for name in ('calendar', 'claim-window', 'provider-select'):
        a = d/'adapters'/name; a.mkdir(parents=True)
        (a/'adapter_config.json').write_text(json.dumps({'base_model_name_or_path': 'tiny', 'peft_type': 'LORA'}))
        (a/'adapter_model.safetensors').write_bytes(b'')
    w = dict(root=d, experts=experts, ds=ds, head=str(head), adapters=d/'adapters',
             router_info={k: ck[k] for k in ('labels', 'label_map', 'base_model_id', 'backbone', 'prompt_version', 'system_prompt')})
    w['snapshot'] = snapshot(d)
    return w

def lines(p): return Path(p).read_text().splitlines()
def write_lines(p, ls): Path(p).write_text('\n'.join(ls) + '\n')
def touch(p, text=''): p = Path(p); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text); return p

def expert_copy(w, tmp, edit=None, name='calendar'):
    "A copy of one synthetic expert dataset, with `edit(list of JSONL lines) -> lines` applied to train.jsonl"
    dst = tmp/name; shutil.copytree(w['experts'][name], dst)
    if edit: write_lines(dst/'train.jsonl', edit(lines(dst/'train.jsonl')))
    return dst

def gen_args(w, tmp, cal, *extra, out='out', train=4, evals=2):
    return ['moe-router-generate', '--calendar-dataset', str(cal), '--claim-window-dataset', str(w['experts']['claim-window']),
            '--provider-select-dataset', str(w['experts']['provider-select']), '--train-samples', str(train), '--eval-samples', str(evals),
            '--output-dir', str(tmp/out), '--no-progress', *extra]

def gen(*extra, edit=None, **kw):
    "A setup that runs moe-router-generate on the three synthetic experts, calendar's copy edited by `edit`"
    return lambda w, t: gen_args(w, t, expert_copy(w, t, edit) if edit else w['experts']['calendar'], *extra, **kw)

def edit_record(line_no, fn):
    "An `edit` that lets `fn(record)` change the JSON record on `line_no` (1-based) in place"
    def edit(ls):
        r = json.loads(ls[line_no-1]); fn(r); ls[line_no-1] = json.dumps(r); return ls
    return edit

def drop_key(key, line_no=2): return edit_record(line_no, lambda r: r.pop(key))
def drop_turn(role, line_no=2): return edit_record(line_no, lambda r: r.update(conversations=[t for t in r['conversations'] if t['from'] != role]))
def drop_turn_everywhere(role):
    def edit(ls): return [json.dumps({**r, 'conversations': [t for t in r['conversations'] if t['from'] != role]}) for r in map(json.loads, ls)]
    return edit
def replace_line(line_no, text):
    def edit(ls): ls[line_no-1] = text; return ls
    return edit
def corrupt_line(line_no=3):
    def edit(ls): ls[line_no-1] = ls[line_no-1][:40]; return ls
    return edit

def remove_images(w, tmp, n=1):
    "A copy of calendar whose first `n` distinct screenshots are deleted"
    cal = expert_copy(w, tmp)
    imgs = list(dict.fromkeys(json.loads(l)['image'] for l in lines(cal/'train.jsonl')))[:n]
    for i in imgs: (cal/i).unlink()
    return cal

def registry(tmp, text):
    p = tmp/'adapters.yaml'; p.write_text(text); return p

GOOD_REG = """adapters:
  calendar: {label: 0}
  claim-window: {label: 1}
  provider-select: {label: 2}
  ocr: {label: 3, optional: true}
"""
SWAPPED_REG = GOOD_REG.replace('calendar: {label: 0}', 'calendar: {label: 1}').replace('claim-window: {label: 1}', 'claim-window: {label: 0}')

def with_reg(text, *extra):
    return lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config', str(registry(t, text)), *extra)

def ds_copy(w, tmp, name='ds'):
    d = tmp/name; shutil.copytree(w['ds'], d); return d

def relabel(w, tmp):
    "A copy of the routing dataset whose label map differs from the registry"
    d = ds_copy(w, tmp, 'relabelled')
    m = json.loads((d/'metadata.json').read_text()); m['label_map'] = {'calendar': 1, 'claim-window': 0, 'provider-select': 2, 'ocr': 3}
    (d/'metadata.json').write_text(json.dumps(m)); return d

def ds_edit(split, fn, name='ds'):
    "A setup helper: a copy of the routing dataset whose `split`.jsonl lines are replaced by `fn(lines)`"
    def make(w, tmp):
        d = ds_copy(w, tmp, name); write_lines(d/f'{split}.jsonl', fn(lines(d/f'{split}.jsonl'))) if fn else (d/f'{split}.jsonl').unlink()
        return d
    return make

def empty_split(w, tmp, split='test'):
    d = ds_copy(w, tmp, 'empty'); (d/f'{split}.jsonl').write_text(''); return d

def ds_missing_image(w, tmp, split='test'):
    "A copy of the routing dataset whose expert screenshots live in a copy with one `split` screenshot deleted"
    ex = tmp/'experts'; shutil.copytree(w['root']/'experts', ex)
    d = ds_copy(w, tmp)
    m = json.loads((d/'metadata.json').read_text()); m['image_roots'] = [str(ex)]; m['dataset_roots'] = {k: str(ex) for k in m['dataset_roots']}
    (d/'metadata.json').write_text(json.dumps(m))
    first = next(json.loads(l) for l in lines(d/f'{split}.jsonl') if json.loads(l).get('image'))
    (ex/first['image']).unlink(); return d

def truncated_head(w, tmp):
    p = tmp/'router-head.pt'; p.write_bytes(Path(w['head']).read_bytes()[:3000]); return p

def router_lora(w, tmp, config_text=None, info=None):
    "A router-LoRA directory as train_router_lora writes it, with `adapter_config.json` = `config_text` (None: absent)"
    d = tmp/'router-lora'/'final'; d.mkdir(parents=True)
    (d/'router.json').write_text(json.dumps(w['router_info'] if info is None else info))
    (d/'adapter_model.safetensors').write_bytes(b'')
    if config_text is not None: (d/'adapter_config.json').write_text(config_text)
    return d.parent

def loras(w, tmp, **override):
    "A loras.json over the fake adapters, with entries replaced by `override`"
    spec = {n: str(w['adapters']/n) for n in ('calendar', 'claim-window', 'provider-select')} | {'ocr': 'base'} | override
    p = tmp/'loras.json'; p.write_text(json.dumps(spec)); return p

def base_loras(w, tmp):
    "A loras.json where every expert is the base model (no adapter files to load)"
    return loras(w, tmp, **{n: 'base' for n in ('calendar', 'claim-window', 'provider-select')})

def bad_adapter(w, tmp, config_text):
    a = tmp/'bad-adapter'; shutil.copytree(w['adapters']/'calendar', a); (a/'adapter_config.json').write_text(config_text); return a

def infer_args(w, tmp, lj, *extra, router=None):
    return ['moe-router-infer', '--prompt', 'Click December 3 in the calendar', '--loras', str(lj), '--router', str(router or w['head']),
            '--model', 'tiny', '--json-out', str(tmp/'out.json'), *extra]

def train_args(w, tmp, *extra, ds=None):
    return ['moe-router-train', '--dataset-dir', str(ds or w['ds']), '--model', 'tiny', '--out', str(tmp/'out'), *extra]

def eval_args(w, tmp, *extra, ds=None, router=None):
    return ['moe-router-eval', '--router', str(router or w['head']), '--dataset-dir', str(ds or w['ds']), '--out', str(tmp/'out'),
            '--no-baseline', *extra]

def image(p, w, h, mode='RGB', fmt='PNG'):
    "An image file of `w` x `h` pixels (mode '1' keeps a huge one small and quick)"
    from PIL import Image
    p = Path(p); p.parent.mkdir(parents=True, exist_ok=True); Image.new(mode, (w, h)).save(p, fmt); return p

def eps(p): return touch(p, '%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n')

def latin1(p, text): p = Path(p); p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(text.encode('latin-1')); return p

def head_variant(w, tmp, n_out=None, **info):
    "A copy of the trained head with `info` fields replaced, or a head of `n_out` outputs under the same labels"
    import torch
    from moe_router.head import RouterHead, save_head, load_head_checkpoint
    ck = load_head_checkpoint(w['head']); meta = {k: v for k, v in ck.items() if k not in ('state_dict', 'format', 'd_in', 'hidden', 'n_out')}
    head = RouterHead(ck['d_in'], n_out or ck['n_out'], ck['hidden']).eval()
    if not n_out: head.load_state_dict(ck['state_dict'])
    return save_head(tmp/'router-head.pt', head, {**meta, **info})

def strip_fingerprints(ls):
    "Routing records as an older build wrote them: no screenshot size or hash"
    return [json.dumps({k: v for k, v in json.loads(l).items() if k not in ('image_bytes', 'image_sha256')}) for l in ls]

def ds_changed_image(w, tmp, split='train', new=None, strip=False):
    "A copy of the routing dataset whose first `split` screenshot (in a copy of the experts) is replaced by `new(path)`"
    d = ds_missing_image(w, tmp, split)
    first = next(json.loads(l) for l in lines(d/f'{split}.jsonl') if json.loads(l).get('image'))
    new(tmp/'experts'/first['image'])
    if strip: write_lines(d/f'{split}.jsonl', strip_fingerprints(lines(d/f'{split}.jsonl')))
    return d

def task_adapter(w, tmp, task):
    "A copy of the fake calendar adapter with `task.json` = `task`"
    a = tmp/'task-adapter'; shutil.copytree(w['adapters']/'calendar', a); (a/'task.json').write_text(json.dumps(task)); return a

def demo_run(user_file):
    "A setup step: a finished demo run directory (manifest included) holding one file of the user's, `user_file`"
    def pre(t):
        run = t/'run'; touch(run/'demo.json', '{}'); touch(run/'task'/'calendar'/'final'/'adapter_model.safetensors')
        files = ['demo.json', 'task/calendar/final/adapter_model.safetensors']
        touch(run/'.moe-router-demo', json.dumps(dict(written_by='moe-router-demo', files=files)))
        touch(run/user_file, 'mine')
    return pre

def previous(path, text='{"previous": "results"}'):
    "A setup step: an earlier run's output file, which a failed run must leave unchanged"
    return lambda t: touch(t/path, text)

# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------
# A row: (id, setup(world, tmp) -> argv, stderr regex, outputs (relative to tmp) that must not exist afterwards,
#         pre(tmp): files an earlier run left there (the row's check is that they stay byte-for-byte unchanged),
#         bug: None, or why the row is xfail today). Every row expects exit code 2.
def case(id, setup, pattern, outputs=('out',), pre=None, bug=None): return (id, setup, pattern, tuple(outputs), pre, bug)

TRACEBACK, EXIT0 = 'crashes with a Python traceback (exit 1) instead of `error: ...` and exit 2', 'is accepted: exit 0'

CASES = [
    # --- 01_datagen: moe-router-generate ------------------------------------------------------------------------
    case('generate: malformed JSON line', gen(edit=corrupt_line(3)), r'calendar/train\.jsonl:3: invalid JSON'),
    case('generate: a line that is not a JSON object', gen(edit=replace_line(3, '[1, 2]')),
         r"calendar/train\.jsonl:3: field '<record>': expected a JSON object"),
    case('generate: record missing conversations', gen(edit=drop_key('conversations', 2)), r"calendar/train\.jsonl:2: field 'conversations'"),
    case('generate: conversations is not a list', gen(edit=edit_record(4, lambda r: r.update(conversations='hi'))),
         r"calendar/train\.jsonl:4: field 'conversations': expected a list"),
    case('generate: record missing its human turn', gen(edit=drop_turn('human', 2)), r"calendar/train\.jsonl:2: field 'conversations\[human\]'"),
    case('generate: records missing their gpt answer', gen(edit=drop_turn_everywhere('gpt')),
         r"calendar/train\.jsonl:1: field 'conversations\[gpt\]'"),
    case('generate: record without an image', gen(edit=drop_key('image', 4)), r"calendar/train\.jsonl:4: field 'image': missing"),
    case('generate: a gold answer that is not a tool call', gen(edit=edit_record(2, lambda r: r['conversations'][-1].update(value='I would click it'))),
         r"calendar/train\.jsonl:2: field 'conversations\[gpt\]\.value': the gold answer is not a parseable tool call"),
    case('generate: a gold coordinate off the 0-1000 scale', gen(edit=edit_record(2, lambda r: r['conversations'][-1].update(
         value='<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [1200, 40]}}\n</tool_call>'))),
         r"calendar/train\.jsonl:2: field 'conversations\[gpt\]\.value': coordinate \[1200, 40\] is not \[x, y\] on the 0–1000 scale"),
    case('generate: missing image files (the first few are listed)', lambda w, t: gen_args(w, t, remove_images(w, t, 3), train=6, evals=4),
         r'calendar/train\.jsonl: \d+ sampled records point at missing image files.*line \d+: calendar/images/\S+\.png; line \d+: calendar/images/'),
    case('generate: empty file', lambda w, t: gen_args(w, t, touch(t/'empty.jsonl')), r'empty\.jsonl.*(empty|no records)'),
    case('generate: dataset path not found', lambda w, t: gen_args(w, t, t/'nope'), r"nope: dataset for 'calendar' not found"),
    case('generate: fewer records than requested', gen(train=40, evals=10), r'calendar/train\.jsonl.*12 usable records, 50 requested'),
    case('generate: --eval-samples larger than available', gen(train=4, evals=20),
         r'calendar/train\.jsonl.*12 usable records, 24 requested \(4 train \+ 20 eval\)'),
    case('generate: unknown adapter name', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--expert', f"bogus={w['experts']['calendar']}"),
         r"adapters\.yaml: unknown adapter 'bogus'; known adapters: calendar, claim-window, provider-select"),
    case('generate: --expert without NAME=', gen('--expert', 'bogus'), r"--expert 'bogus': expected NAME=PATH"),
    case('generate: registry with duplicate labels', with_reg(GOOD_REG.replace('claim-window: {label: 1}', 'claim-window: {label: 0}')),
         r'adapters\.yaml.*label'),
    case('generate: registry with non-contiguous labels', with_reg(GOOD_REG.replace('ocr: {label: 3', 'ocr: {label: 7')), r'adapters\.yaml.*contiguous'),
    case('generate: registry with an unknown key', with_reg(GOOD_REG.replace('calendar: {label: 0}', 'calendar: {label: 0, lable: 1}')),
         r'adapters\.yaml.*lable'),
    case('generate: registry with a name that is not a slug', with_reg(GOOD_REG.replace('calendar: {label: 0}', '"Calendar View!": {label: 0}')),
         r'adapters\.yaml.*Calendar View!'),
    case('generate: registry that is not valid YAML', with_reg('adapters:\n  calendar: {label: 0\n'), r'adapters\.yaml: invalid YAML.*line \d+'),
    case('generate: registry file not found', gen('--config', 'nope.yaml'), r'nope\.yaml: registry file not found'),
    case('generate: --train-val-split 1.5', gen('--train-val-split', '1.5'), r'--train-val-split must be between 0 and 1.*1\.5'),
    case('generate: --train-val-split 0', gen('--train-val-split', '0'), r'--train-val-split must be between 0 and 1.*got 0'),
    case('generate: --train-val-split 1', gen('--train-val-split', '1'), r'--train-val-split must be between 0 and 1.*got 1'),
    case('generate: --train-samples -3', gen(train=-3), r'--train-samples must be a whole number >= 0, got -3'),
    case('generate: --hard-pair-frac 2', gen('--ocr-samples', '2', '--hard-pair-frac', '2'), r'--hard-pair-frac must be between 0 and 1'),
    case('generate: more OCR samples than images x templates', gen('--ocr-samples', '5000'), r'OCR samples requested but only \d+ distinct images'),
    case('generate: output directory exists (and is left unchanged)', gen(), r'out: output directory already exists', outputs=(),
         pre=previous('out/metadata.json')),
    case('generate: output path is a file', gen(), r'out is an existing file, not a directory', outputs=(), pre=previous('out', 'a file')),
    # --- 02_ocr_synth: moe-router-synth --------------------------------------------------------------------------
    case('synth: output directory exists (and is left unchanged)', lambda w, t: ['moe-router-synth', '--out', t/'syn', '--per-expert', '2'],
         r'syn.*already exists', outputs=(), pre=previous('syn/calendar/train.jsonl')),
    case('synth: --out missing', lambda w, t: ['moe-router-synth', '--per-expert', '2'], r'--out', outputs=()),
    case('synth: --per-expert 0', lambda w, t: ['moe-router-synth', '--out', t/'syn', '--per-expert', '0'], r'per_expert must be >= 1',
         outputs=('syn',)),
    # --- moe-router-upload (dry run only) ------------------------------------------------------------------------
    case('upload: a directory that is not a routing dataset', lambda w, t: ['moe-router-upload', w['experts']['calendar'], '--dry-run'],
         r'calendar: not a routing dataset \(no metadata\.json', outputs=()),
    case('upload: a directory that does not exist', lambda w, t: ['moe-router-upload', t/'nope', '--dry-run'], r'nope: not a routing dataset',
         outputs=()),
    # --- 03_train_modal: moe-router-train ------------------------------------------------------------------------
    case('train: unknown --router', lambda w, t: train_args(w, t, '--router', 'forest'), r"unknown --router 'forest'; use one of head, lora"),
    case('train: unknown --backend', lambda w, t: train_args(w, t, '--backend', 'slurm'), r"unknown --backend 'slurm'"),
    case('train: unknown --model', lambda w, t: ['moe-router-train', '--dataset-dir', w['ds'], '--model', 'no such model', '--out', t/'out'],
         r'no such model'),
    case('train: unknown --pooling', lambda w, t: train_args(w, t, '--pooling', 'max'), r"unknown pooling 'max'"),
    case('train: missing dataset directory', lambda w, t: train_args(w, t, ds=t/'nope'), r'nope'),
    case('train: dataset without val.jsonl', lambda w, t: train_args(w, t, ds=ds_edit('val', None)(w, t)),
         r'ds: missing \S*ds/val\.jsonl \(looked for \S*ds/train\.jsonl and \S*ds/val\.jsonl\)'),
    case('train: empty val.jsonl', lambda w, t: train_args(w, t, ds=ds_edit('val', lambda ls: [])(w, t)), r'ds/val\.jsonl: no samples'),
    case('train: malformed line in train.jsonl', lambda w, t: train_args(w, t, ds=ds_edit('train', corrupt_line(2))(w, t)),
         r'ds/train\.jsonl:2: invalid JSON'),
    case('train: a sample whose label is not the registry\'s', lambda w, t: train_args(w, t, ds=ds_edit('train', edit_record(3, lambda r: r.update(label=9)))(w, t)),
         r"ds/train\.jsonl:3: label 9 for adapter '[\w-]+' does not match the registry's label map"),
    case('train: label map differs from the registry', lambda w, t: train_args(w, t, ds=relabel(w, t)),
         r"relabelled/metadata\.json: label map \{'calendar': 1, 'claim-window': 0.*differs from the registry's \{'calendar': 0, 'claim-window': 1"),
    case('train: a training image that does not resolve (the previous checkpoint is kept)',
         lambda w, t: train_args(w, t, ds=ds_missing_image(w, t, 'train')),
         r"ds/train\.jsonl:\d+: \S+\.png \(looked under", outputs=(), pre=previous('out/router-head.pt', 'previous checkpoint')),
    case('train: --epochs 0', lambda w, t: train_args(w, t, '--epochs', '0'), r'--epochs'),
    case('train: --epochs -1', lambda w, t: train_args(w, t, '--epochs', '-1'), r'--epochs -1 must be greater than 0'),
    case('train: --batch-size 0', lambda w, t: train_args(w, t, '--batch-size', '0'), r'--batch-size'),
    case('train: --lr -1', lambda w, t: train_args(w, t, '--lr', '-1'), r'--lr -1 must be greater than 0'),
    # --- 04_eval_confusion: moe-router-eval ----------------------------------------------------------------------
    case('eval: --router missing', lambda w, t: ['moe-router-eval', '--dataset-dir', w['ds'], '--out', t/'out'], r'--router'),
    case('eval: missing dataset directory', lambda w, t: eval_args(w, t, ds=t/'nope'), r'nope: routing dataset directory not found'),
    case('eval: empty split (earlier results are kept)', lambda w, t: eval_args(w, t, ds=empty_split(w, t)),
         r'test\.jsonl.*no samples', outputs=(), pre=previous('out/router-eval.json')),
    case('eval: unknown --split', lambda w, t: eval_args(w, t, '--split', 'bogus'), r"unknown split 'bogus'"),
    case('eval: router labels differ from the dataset', lambda w, t: eval_args(w, t, ds=relabel(w, t)),
         r"router-head\.pt: label map \{'calendar': 0.*differs from the dataset's \{'claim-window': 0"),
    case('eval: dataset label map differs from --registry', lambda w, t: eval_args(w, t, '--registry', registry(t, SWAPPED_REG)),
         r"routing/metadata\.json: label map \{'calendar': 0.*differs from the registry's \{'claim-window': 0"),
    case('eval: a test screenshot is missing', lambda w, t: eval_args(w, t, ds=ds_missing_image(w, t)),
         r"image '[^']+\.png' does not resolve to a file"),
    case('eval: missing router checkpoint', lambda w, t: eval_args(w, t, router=t/'router-head.pt'), r'router-head\.pt'),
    case('eval: truncated router-head.pt', lambda w, t: eval_args(w, t, router=truncated_head(w, t)),
         r'router-head\.pt: cannot read router head checkpoint, the file is corrupt or truncated'),
    case('eval: a directory that is not a router', lambda w, t: eval_args(w, t, router=(t/'x').mkdir() or t/'x'), r'x: not a router checkpoint'),
    case('eval: router LoRA with a corrupt adapter_config.json', lambda w, t: eval_args(w, t, router=router_lora(w, t, '{"base_model')),
         r'router-lora/final/adapter_config\.json'),
    case('eval: router LoRA without adapter_config.json', lambda w, t: eval_args(w, t, router=router_lora(w, t, None)),
         r'router-lora/final.*adapter_config\.json'),
    case('eval: router LoRA whose router.json lacks base_model_id', lambda w, t: eval_args(w, t, router=router_lora(w, t, '{}', info={'labels': ['calendar']})),
         r'router-lora/final/router\.json.*base_model_id'),
    case('eval: unknown --compare file format', lambda w, t: eval_args(w, t, '--compare', touch(t/'other.json', '{"hello": 1}')), r'other\.json.*hello'),
    case('eval: --compare file with invalid JSON', lambda w, t: eval_args(w, t, '--compare', touch(t/'other.json', '{"accuracy": 0.5, \n')),
         r'other\.json: invalid JSON .*line 2'),
    case('eval: --compare JSONL with a bad line', lambda w, t: eval_args(w, t, '--compare',
         touch(t/'other.jsonl', '{"expected": "calendar", "predicted": "ocr", "correct": false}\n{"expected": \n')), r'other\.jsonl:2: invalid JSON'),
    case('eval: --compare file not found', lambda w, t: eval_args(w, t, '--compare', t/'other.json'), r'other\.json: evaluation file not found'),
    case('eval: --target-accuracy 2', lambda w, t: eval_args(w, t, '--target-accuracy', '2'), r'--target-accuracy 2\.0 must be between 0 and 1'),
    case('eval: --target-accuracy -1', lambda w, t: eval_args(w, t, '--target-accuracy', '-1'), r'--target-accuracy -1\.0 must be between 0 and 1'),
    case('eval: --target-accuracy nan', lambda w, t: eval_args(w, t, '--target-accuracy', 'nan'), r'--target-accuracy nan must be between 0 and 1'),
    # --- 05_stacked_infer: moe-router-infer ----------------------------------------------------------------------
    case('infer: neither --prompt nor --dataset-dir', lambda w, t: ['moe-router-infer', '--model', 'tiny', '--router', w['head']],
         r'give --prompt', outputs=()),
    case('infer: loras.json not found', lambda w, t: infer_args(w, t, t/'loras.json'), r'loras\.json: loras file not found', outputs=('out.json',)),
    case('infer: loras.json with invalid JSON', lambda w, t: infer_args(w, t, touch(t/'loras.json', '{"calendar": "base",\n')),
         r'loras\.json:2: invalid JSON', outputs=('out.json',)),
    case('infer: missing adapter path', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(t/'gone'))), r'calendar.*gone', outputs=('out.json',)),
    case('infer: corrupt adapter_config.json', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(bad_adapter(w, t, '{"base_model_name_or_path": ')))),
         r'bad-adapter/adapter_config\.json', outputs=('out.json',)),
    case('infer: adapter trained on a different base', lambda w, t: infer_args(w, t, loras(w, t, calendar=str(bad_adapter(w, t,
         json.dumps({'base_model_name_or_path': 'Qwen/Qwen2-VL-2B-Instruct', 'peft_type': 'LORA'}))))),
         r'calendar.*Qwen2-VL-2B-Instruct.*tiny|calendar.*tiny.*Qwen2-VL-2B', outputs=('out.json',)),
    case('infer: adapter files PEFT cannot load', lambda w, t: infer_args(w, t, loras(w, t)), r'adapters/calendar.*target_modules', outputs=('out.json',)),
    case('infer: expert without an adapter and no fallback', lambda w, t: infer_args(w, t, loras(w, t, ocr=None)), r'ocr.*fallback', outputs=('out.json',)),
    case('infer: --fallback that is not an adapter', lambda w, t: infer_args(w, t, base_loras(w, t), '--threshold', '0.5', '--fallback', 'weather'),
         r"fallback 'weather' is not a loaded adapter", outputs=('out.json',)),
    case('infer: --threshold without a fallback', lambda w, t: infer_args(w, t, base_loras(w, t), '--threshold', '0.9'),
         r'threshold 0\.9 needs a fallback', outputs=('out.json',)),
    case('infer: unknown --expert', lambda w, t: infer_args(w, t, base_loras(w, t), '--expert', 'weather'), r'weather', outputs=('out.json',)),
    case('infer: missing image file', lambda w, t: infer_args(w, t, loras(w, t), '--image', t/'shot.png'), r'shot\.png: image file not found',
         outputs=('out.json',)),
    case('infer: an image file that is not an image', lambda w, t: infer_args(w, t, base_loras(w, t), '--image', touch(t/'shot.png', 'not a png')),
         r'\S*shot\.png does not decode to an image', outputs=('out.json',)),
    case('infer: truncated router-head.pt', lambda w, t: infer_args(w, t, base_loras(w, t), router=truncated_head(w, t)),
         r'router-head\.pt: cannot read router head checkpoint', outputs=('out.json',)),
    case('infer: router LoRA with a corrupt adapter_config.json', lambda w, t: infer_args(w, t, base_loras(w, t), router=router_lora(w, t, '{"base_model')),
         r'router-lora/final/adapter_config\.json', outputs=('out.json',)),
    case('infer: missing --dataset-dir', lambda w, t: ['moe-router-infer', '--model', 'tiny', '--loras', base_loras(w, t), '--router', w['head'],
         '--dataset-dir', t/'nope', '--json-out', t/'out.json'], r'nope: routing dataset directory not found', outputs=('out.json',)),
    case('infer: --threshold 1.5', lambda w, t: infer_args(w, t, base_loras(w, t), '--threshold', '1.5', '--fallback', 'base'), r'--threshold',
         outputs=('out.json',)),
    case('infer: --max-samples -1', lambda w, t: ['moe-router-infer', '--model', 'tiny', '--loras', base_loras(w, t), '--router', w['head'],
         '--dataset-dir', w['ds'], '--max-samples', '-1', '--json-out', t/'out.json'], r'--max-samples', outputs=('out.json',)),
    case('infer: --max-new-tokens -5', lambda w, t: infer_args(w, t, base_loras(w, t), '--max-new-tokens', '-5'), r'--max-new-tokens',
         outputs=('out.json',)),
    # --- the second round of hostile input (issue 22) -----------------------------------------------------------
    case('generate: the same dataset given for two experts', lambda w, t: ['moe-router-generate', '--calendar-dataset', w['experts']['calendar'],
         '--claim-window-dataset', w['experts']['calendar'], '--provider-select-dataset', w['experts']['provider-select'],
         '--output-dir', t/'out', '--no-progress'], r"'calendar' and 'claim-window' are both given the dataset \S*calendar"),
    case('generate: adapters.yaml that is not UTF-8', lambda w, t: gen_args(w, t, w['experts']['calendar'], '--config',
         latin1(t/'adapters.yaml', GOOD_REG.replace('claim-window: {label: 1}', 'claim-window: {label: 1, description: café}'))),
         r'adapters\.yaml:3: not UTF-8 \(byte 0xe9'),
    case('generate: labels of mixed types in adapters.yaml', with_reg(GOOD_REG.replace('claim-window: {label: 1}', 'claim-window: {label: one}')),
         r'adapters\.yaml: labels must be integers'),
    case('generate: --output-dir under /proc', gen(out='/proc/moe-router/out'), r'--output-dir /proc/moe-router/out: /proc is not writable',
         outputs=()),
    case('train: a routing record without text', lambda w, t: train_args(w, t, ds=ds_edit('train', edit_record(2, lambda r: r.pop('text')))(w, t)),
         r"ds/train\.jsonl:2: field 'text': missing or empty"),
    case('train: a routing record whose image path leaves the roots (../)', lambda w, t: train_args(w, t,
         ds=ds_edit('train', edit_record(2, lambda r: r.update(image='../../../etc/x.png')))(w, t)),
         r"ds/train\.jsonl:2: field 'image': '\.\./\.\./\.\./etc/x\.png' leaves the image roots"),
    case('train: a screenshot that changed since the build', lambda w, t: train_args(w, t, ds=ds_changed_image(w, t, new=lambda p: image(p, 41, 29))),
         r"sample \S+: image \S+\.png (has \d+ bytes, the dataset recorded \d+|is not the file the dataset was built from)"),
    case('train: a 1x3000 screenshot', lambda w, t: train_args(w, t, ds=ds_changed_image(w, t, new=lambda p: image(p, 1, 3000), strip=True)),
         r"cannot read image \S+\.png \(the file is 1x3000 pixels, an aspect ratio over 200:1"),
    case('train: --dropout 2', lambda w, t: train_args(w, t, '--router', 'lora', '--dropout', '2'), r'--dropout 2 must be at least 0 and below 1'),
    case('train: --r 0', lambda w, t: train_args(w, t, '--router', 'lora', '--r', '0'), r'--r 0 must be at least 1 \(the LoRA rank\)'),
    case('train: --grad-accum 0', lambda w, t: train_args(w, t, '--router', 'lora', '--grad-accum', '0'), r'--grad-accum 0 must be at least 1'),
    case('train: --alpha -5', lambda w, t: train_args(w, t, '--router', 'lora', '--alpha', '-5'), r'--alpha -5 must be a number greater than 0'),
    case('train: --label-weight -1', lambda w, t: train_args(w, t, '--router', 'lora', '--label-weight', '-1'),
         r'--label-weight -1 must be a number of at least 0'),
    case('train: --out under /proc', lambda w, t: ['moe-router-train', '--dataset-dir', w['ds'], '--model', 'tiny', '--out', '/proc/moe-router/head'],
         r'--out /proc/moe-router/head: /proc is not writable', outputs=()),
    case('eval: router head whose labels are swapped against its label_map', lambda w, t: eval_args(w, t, router=head_variant(w, t,
         label_map={'calendar': 1, 'claim-window': 0, 'provider-select': 2, 'ocr': 3})), r"router-head\.pt: field 'label_map'"),
    case('eval: router head with more outputs than labels', lambda w, t: eval_args(w, t, router=head_variant(w, t, n_out=5)),
         r"router-head\.pt: field 'n_out': the head has 5 outputs for 4 labels"),
    case('eval: router head with a duplicate label', lambda w, t: eval_args(w, t, router=head_variant(w, t,
         labels=['calendar', 'calendar', 'provider-select', 'ocr'], label_map=None)), r"router-head\.pt: field 'labels': \['calendar'\] repeated"),
    case('eval: router head with an unknown prompt version', lambda w, t: eval_args(w, t, router=head_variant(w, t, prompt_version='router-v0')),
         r"router-head\.pt: field 'prompt_version': 'router-v0'"),
    case('eval: --out under /proc', lambda w, t: ['moe-router-eval', '--router', w['head'], '--dataset-dir', w['ds'], '--out', '/proc/moe-router/eval'],
         r'--out /proc/moe-router/eval: /proc is not writable', outputs=()),
    case('infer: loras.json that is not UTF-8', lambda w, t: infer_args(w, t, latin1(t/'loras.json', '{"calendar": "base",\n "ocr": "café"}')),
         r'loras\.json:2: not UTF-8 \(byte 0xe9', outputs=('out.json',)),
    case('infer: --json-out is a directory', lambda w, t: infer_args(w, t, base_loras(w, t), '--json-out', (t/'res').mkdir() or t/'res'),
         r'--json-out \S*res: is a directory', outputs=()),
    case('infer: a 1x3000 screenshot', lambda w, t: infer_args(w, t, base_loras(w, t), '--image', image(t/'shot.png', 1, 3000)),
         r'shot\.png is 1x3000 pixels, an aspect ratio over 200:1', outputs=('out.json',)),
    case('infer: a 49-megapixel screenshot (the server refuses it too)', lambda w, t: infer_args(w, t, base_loras(w, t), '--image',
         image(t/'big.png', 7000, 7000, mode='1')), r'big\.png is 7000x7000 pixels, more than 40000000', outputs=('out.json',)),
    case('infer: an EPS as the screenshot', lambda w, t: infer_args(w, t, base_loras(w, t), '--image', eps(t/'shot.eps')),
         r'shot\.eps does not decode to an image', outputs=('out.json',)),
    case('infer: router LoRA whose router.json swaps its label map', lambda w, t: infer_args(w, t, base_loras(w, t), router=router_lora(w, t,
         json.dumps({'base_model_name_or_path': 'tiny', 'peft_type': 'LORA'}),
         info={**w['router_info'], 'label_map': {'calendar': 1, 'claim-window': 0, 'provider-select': 2, 'ocr': 3}})),
         r"router-lora/final/router\.json: field 'label_map'", outputs=('out.json',)),
    case('infer: task adapter whose task.json has an unknown prompt version', lambda w, t: infer_args(w, t, loras(w, t,
         calendar=str(task_adapter(w, t, {'kind': 'task', 'base_model_id': 'tiny', 'prompt_version': 'task-v0'})))),
         r"task-adapter/task\.json: field 'prompt_version': 'task-v0'", outputs=('out.json',)),
    case('infer: a run whose only checkpoint was cut off mid-save', lambda w, t: infer_args(w, t, loras(w, t,
         calendar=str(touch(t/'run'/'checkpoint-5'/'adapter_config.json', '{"peft_type": "LORA"}').parent.parent))),
         r"checkpoint-5: incomplete checkpoint \(cut off mid-save\), skipped.*adapter 'calendar': no adapter_config\.json in \S*run",
         outputs=('out.json',)),
    case('eval: --out holding a file an evaluation does not write', lambda w, t: eval_args(w, t), r'out: holds files an evaluation does not write \(notes\.txt\)',
         outputs=(), pre=previous('out/notes.txt', 'mine')),
    case('demo: --out ""', lambda w, t: ['moe-router-demo', '--out', '', '--quick'], r'--out is empty', outputs=()),
    case('demo: a user file deep inside task/ of a demo run', lambda w, t: ['moe-router-demo', '--out', t/'run', '--quick'],
         r'holds files the demo did not write \(task/my_adapter\.safetensors\)', outputs=(), pre=demo_run('task/my_adapter.safetensors')),
    case('demo: a hidden file of the user named like a temporary one', lambda w, t: ['moe-router-demo', '--out', t/'run', '--quick'],
         r'holds files the demo did not write \(task/\.x\.y\.tmp\)', outputs=(), pre=demo_run('task/.x.y.tmp')),
    case('demo: a hidden file of the user named like a partial one', lambda w, t: ['moe-router-demo', '--out', t/'run', '--quick'],
         r'holds files the demo did not write \(\.notes\.partial-1\)', outputs=(), pre=demo_run('.notes.partial-1')),
]

def params():
    return [pytest.param(c, id=c[0], marks=[pytest.mark.xfail(strict=True, reason=f"BUG: {c[0]} {c[5]}")] if c[5] else [])
            for c in CASES]

def record(request, name, rc, clear, left=(), bug=None):
    TRIED[request.node.nodeid] = dict(name=name, rc=rc, clear=clear, left=list(left), bug=bug)

@pytest.mark.parametrize('case', params())
def test_bad_input(case, world, tmp_path, run, request):
    "Exit code 2, a located message without a traceback, and nothing half-written or changed"
    name, setup, pattern, outputs, pre, bug = case
    if pre: pre(tmp_path)
    argv = setup(world, tmp_path)
    before = snapshot(tmp_path)
    r = run(argv, tmp_path)
    left = left_behind(before, snapshot(tmp_path))
    clear = (r.returncode == 2 and 'Traceback' not in r.stderr and 'error:' in r.stderr and bool(re.search(pattern, r.stderr, re.S)))
    record(request, name, r.returncode, clear, left, bug)
    assert r.returncode == 2, f"{name}: exit {r.returncode}, expected 2\nstdout: {r.stdout[-1500:]}\nstderr: {r.stderr[-3000:]}"
    assert 'Traceback' not in r.stderr, r.stderr
    assert re.search(r'(^|\n)(\S+: )?error: ', r.stderr), r.stderr
    assert re.search(pattern, r.stderr, re.S), f"{name}: message does not match {pattern!r}:\n{r.stderr}"
    for o in outputs: assert not (tmp_path/o).exists(), f"{name}: left {o} behind"
    assert not left, f"{name}: files appeared, changed or vanished: {left}"

# ---------------------------------------------------------------------------------------------------------------
# Bad input that is skipped on request, and bad requests to the endpoint and the explorer
# ---------------------------------------------------------------------------------------------------------------
def test_skip_invalid_counts_and_reports(world, tmp_path, run, request):
    "With --skip-invalid a bad record and missing images are skipped, counted in metadata and reported on the console"
    cal = expert_copy(world, tmp_path, drop_key('conversations', 2))
    for i in list(dict.fromkeys(json.loads(l)['image'] for l in lines(cal/'train.jsonl')[2:]))[:2]: (cal/i).unlink()
    r = run(gen_args(world, tmp_path, cal, '--skip-invalid', train=4, evals=2), tmp_path)
    assert r.returncode == 0, r.stderr
    skipped = json.loads((tmp_path/'out'/'metadata.json').read_text())['skipped']
    assert skipped['calendar']['invalid_record'] == 1 and skipped['calendar']['missing_image'] >= 1, skipped
    assert f"skipped: {skipped['calendar']}" in r.stdout, r.stdout
    assert not list(tmp_path.glob('*.partial*'))
    record(request, 'generate --skip-invalid: counted and reported', 0, True)

@pytest.fixture(scope='module')
def service(world):
    "The endpoint's request handler around a stacked pipeline (tiny base, the head router, every expert = the base)"
    from moe_router.infer import StackedPipeline
    from moe_router.service import InferenceService
    pipe = StackedPipeline.load({n: 'base' for n in world['router_info']['labels']}, world['head'], 'tiny', max_new_tokens=4)
    svc = InferenceService(pipe)
    yield svc
    shutil.rmtree(svc.tmp, ignore_errors=True)

BAD_IMAGES = [('***not base64***', 'not valid base64'), (base64.b64encode(b'not an image').decode(), 'does not decode to an image')]

def test_endpoint_bad_requests_keep_serving(world, service, request):
    "Bad base64, an undecodable image, an empty prompt, a body that is not an object and an unknown expert are 4xx replies; the next request is served"
    served, failed = service.served, service.failed
    bad = [*(({'prompt': 'Click day 3', 'image_b64': b}, 400, m) for b, m in BAD_IMAGES),
           ({'prompt': '   '}, 400, "'prompt' is required"), (['not', 'a', 'dict'], 400, 'JSON object'),
           ({'prompt': 'Click day 3', 'expert': 'weather'}, 422, "unknown expert 'weather'")]
    for body, status, msg in bad:
        code, reply = service.handle(body)
        assert (code, reply.get('status')) == (status, status) and msg in reply['error'], (body, code, reply)
    code, reply = service.handle({'prompt': 'Click December 3 in the calendar'})
    assert code == 200 and reply['router_choice'] in world['router_info']['labels'] and reply['task_output'], reply
    assert (service.served - served, service.failed - failed) == (1, len(bad))
    record(request, f'endpoint: {len(bad)} bad requests answered 4xx, then served', 0, True)

def test_endpoint_bad_image_leaves_no_temp_file(service, request):
    "A request whose image does not decode leaves no temporary file behind"
    before = set(service.tmp.iterdir())
    for b, _ in BAD_IMAGES: assert service.handle({'prompt': 'Click day 3', 'image_b64': b})[0] == 400
    left = sorted(p.name for p in set(service.tmp.iterdir()) - before)
    record(request, 'endpoint: bad images leave no temp file', 400, not left, left, None)
    assert not left, f"temporary files left in {service.tmp}: {left}"

def test_explorer_missing_image_placeholder(world, request):
    "A screenshot that is gone shows the placeholder in the exploration view and the HTML report"
    from moe_router.evaluate import evaluate
    from moe_router.report import report_html
    from moe_router.explore import explore
    from moe_router.thumbs import PLACEHOLDER
    import numpy as np
    samples, _ = load_split(world['ds'], 'test')
    samples[0] = {**samples[0], 'image_path': str(world['root']/'gone.png')}
    labels = world['router_info']['labels']
    ev = evaluate(lambda ss: np.full((len(ss), len(labels)), 1/len(labels)), samples, labels=labels, progress=False)
    html = report_html(ev)
    assert PLACEHOLDER in html and html.count('data:image/jpeg;base64,') >= 1
    explore(ev)   # builds without raising, with or without a kernel
    record(request, 'explorer: missing screenshot -> placeholder', 0, True)

def test_eval_into_a_used_out_replaces_it(world, tmp_path, run, request):
    "A second evaluation into the same --out replaces the first whole: no stale comparison files, and the explorer loads it"
    from moe_router.explore import Explorer
    first = run(eval_args(world, tmp_path)[:-1], tmp_path)            # with the TF-IDF baseline: comparison files
    assert first.returncode == 0 and (tmp_path/'out'/'comparison.json').is_file(), first.stderr[-2000:]
    second = run(eval_args(world, tmp_path), tmp_path)                # --no-baseline: no comparison
    left = sorted(p.name for p in (tmp_path/'out').iterdir())
    ok = second.returncode == 0 and 'comparison.json' not in left and 'compare' not in left
    record(request, 'eval into a used --out: replaced whole', second.returncode, ok)
    assert ok, (second.returncode, left, second.stderr[-2000:])
    assert Explorer.from_dir(tmp_path/'out').ev.name and not list(tmp_path.glob('.out.*'))

def test_explorer_export_stays_in_its_run(tmp_path, request):
    "Labels from router-eval.json cannot steer the export file outside the run"
    from moe_router.explore import export_path
    p = export_path(tmp_path/'run', 'head', '../../../../x', '..')
    inside = p.parent == tmp_path/'run'/'exports'
    record(request, 'explorer export: a label of ../../../../x stays in exports/', 0, inside)
    assert inside, p

# ---------------------------------------------------------------------------------------------------------------
# Killed mid-build, and the same seed twice
# ---------------------------------------------------------------------------------------------------------------
KILL_AT = {'after data.jsonl': ('write_jsonl', 1), 'after test.jsonl': ('write_jsonl', 4),
           'after metadata.json, before the rename': ('atomic_write_json', 1)}

@pytest.mark.parametrize('point', list(KILL_AT))
def test_sigkill_mid_build_leaves_nothing_complete(world, tmp_path, run, request, point):
    "A build killed with SIGKILL while writing leaves no directory that looks like a dataset, and a rerun succeeds"
    fn, nth = KILL_AT[point]
    child = ("import sys, time, moe_router.datagen as g\n"
             f"orig, n = g.{fn}, [0]\n"
             "def slow(*a, **k):\n"
             f"    r = orig(*a, **k); n[0] += 1\n    if n[0] == {nth}: print('wrote', a[0], flush=True); time.sleep(120)\n    return r\n"
             f"g.{fn} = slow\n"
             f"g.build_routing_dataset({ {n: str(d) for n, d in world['experts'].items()}!r}, "
             f"{str(tmp_path/'out')!r}, train_samples=4, eval_samples=2, log=None)\n")
    p = subprocess.Popen([sys.executable, '-c', child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        first = p.stdout.readline()                 # the build is mid-way: that file is written, the rest is not
        assert first.startswith('wrote'), p.stderr.read()
    finally:
        os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path/'out').exists(), 'a killed build left the final dataset directory'
    leftovers = [d for d in tmp_path.iterdir()]
    assert all(re.fullmatch(r'\.out\.partial-[\w-]+', d.name) for d in leftovers), leftovers  # this run's own partial directory
    complete = []
    for d in leftovers:                             # what is left is the .partial directory, and nothing may accept it
        try: load_split(d, 'train'); complete.append(d.name)
        except DatasetError: pass
        u = run(['moe-router-upload', d, '--dry-run'], tmp_path)
        if u.returncode == 0: complete.append(f'{d.name} (moe-router-upload)')
    record(request, f'SIGKILL {point}', p.returncode, not complete, complete)
    assert not complete, f"a killed build left a directory that loads as a dataset: {complete}"
    r = run(gen_args(world, tmp_path, world['experts']['calendar']), tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'out'/'metadata.json').is_file() and not list(tmp_path.glob('*.partial*'))

def test_same_seed_byte_identical(world, tmp_path, run, request):
    "Two builds with the same seed write byte-identical split files; metadata differs only in its time and place"
    def build(name, seed):
        r = run(gen_args(world, tmp_path, world['experts']['calendar'], '--seed', str(seed), '--ocr-samples', '4', out=name), tmp_path)
        assert r.returncode == 0, r.stderr
        return tmp_path/name
    a, b, c = build('run0', 7), build('run1', 7), build('other-seed', 8)
    files = ('data.jsonl', 'train.jsonl', 'val.jsonl', 'test.jsonl')
    for f in files: assert (a/f).read_bytes() == (b/f).read_bytes(), f
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir()) == sorted([*files, 'metadata.json'])
    m0, m1 = (json.loads((o/'metadata.json').read_text()) for o in (a, b))
    assert m0.keys() == m1.keys()
    assert {k for k in m0 if m0[k] != m1[k]} == {'created_at', 'dataset_dir'}
    assert (a/'train.jsonl').read_bytes() != (c/'train.jsonl').read_bytes()   # the comparison can fail: another seed differs
    record(request, 'same seed twice: byte-identical', 0, True)

# ---------------------------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------------------------
def test_zz_summary(world, request, capsys):
    "How many bad inputs were tried, that each ran, and that none left half-written output"
    mod = request.node.module.__name__
    selected = [i.nodeid for i in request.session.items if i.module.__name__ == mod and i.nodeid != request.node.nodeid]
    if not selected: pytest.skip('no sweep test was selected')
    assert sorted(TRIED) == sorted(selected), f"cases that did not run to the end: {sorted(set(selected) - set(TRIED))}"
    known = {k: v for k, v in TRIED.items() if v['bug']}
    good = {k: v for k, v in TRIED.items() if not v['bug']}
    bad_good = [v['name'] for v in good.values() if not v['clear'] or v['left']]
    half = [v['name'] for v in good.values() if v['left']]
    lines_ = [f"bad-input sweep: {len(TRIED)} cases tried; {sum(v['clear'] for v in good.values())} exited non-zero with a clear "
              f"message (or behaved as specified) and {len(half)} of them left half-written output; "
              f"{len(known)} known bugs marked xfail:"]
    lines_ += [f"  xfail: {v['name']} (exit {v['rc']}{'; left ' + ', '.join(v['left'][:3]) if v['left'] else ''})" for v in known.values()]
    with capsys.disabled(): print('\n' + '\n'.join(lines_))
    assert not bad_good, bad_good
    assert snapshot(world['root']) == world['snapshot'], 'a case modified the shared fixtures'
