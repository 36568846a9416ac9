"""Real-scale speed (issues 12 and 20): start-up, decode, the stacked request, routing, shared vision and a batch of 12
on a Qwen3-VL with random weights, saved to disk and loaded through `load_backbone` as a user's model would be, with
three task LoRAs of the project's `lora_config` and a router head, driven through `StackedPipeline`.

  python bench/bench_gpu.py --shapes tiny --out bench/out/gpu-tiny   # CPU, about a minute (the default)
  python bench/bench_gpu.py --shapes 8b   --out /tmp/gpu-8b          # one H100/H200, under 7 minutes (exit 2 without CUDA)

Every figure is measured in this one process against baselines measured in the same run: the eager path
(`StackedPipeline(fast=False)`: PEFT adapters unmerged, transformers' `generate`) and a fresh base + adapter per request
(the original `modal/stacked_inference.py`'s way). The fast path is `fast=True`: the adapter folded into a working
copy of the weights and kept there, `GreedyDecoder` with its step compiled with CUDA graphs (on the CPU: the same
code, eager steps). Start-up is measured in two fresh processes (`--probe`): cold (empty compile caches) and warm
(the cache artifacts the cold one saved).

Writes DIR/gpu-<shapes>-<device>.json after every section (a run cut short still leaves its figures), prints a
markdown table and ends with `identical to eager: N/N`. `--budget S` skips the sections that no longer fit in S
seconds. It imports only the model path of moe_router (no modal, trl or datasets). No timed assertions.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, traceback, warnings
from pathlib import Path
T_START = time.time()
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings('ignore')

EXPERTS = ['calendar', 'claim-window', 'provider-select']
LABELS = EXPERTS + ['ocr']
NEW_TOKENS = 40
TEXTS = ['Click December 3 in the calendar', 'Select Dr. Jaramillo from the dropdown list', 'Scroll down one page within the grid.',
         'Read the text in the highlighted field', 'Click the OK button', 'Type hello in the search box']
QWEN3VL_8B = dict(   # Qwen/Qwen3-VL-8B-Instruct's config.json
    text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
              head_dim=128, vocab_size=151936, tie_word_embeddings=False, max_position_embeddings=262144,
              rope_parameters=dict(rope_type='default', rope_theta=5e6, mrope_section=[24, 20, 20], mrope_interleaved=True)),
    vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096, patch_size=16,
                spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]))
BANDWIDTH = {'H200': 4.8e12, 'H100': 3.35e12}  # spec-sheet HBM bandwidth, bytes/s
CPU_BANDWIDTH = 20e9                             # assumed for a CPU (DDR, a few channels)
SIZES = (1, 4)                                   # batch sizes the fast path is warmed for
# seconds a section needs at 8B shapes (measured on an H200 or estimated from its parts); skipped when less is left
NEED = dict(warm_main=30, start=90, decode=40, stacked=45, route=10, batch12=60, shared_vision=15, alternate=15)


def sync():
    import torch
    if torch.cuda.is_available(): torch.cuda.synchronize()

def timed(f):
    "(seconds, result) of `f()`, the GPU synchronised on both sides"
    sync(); t0 = time.perf_counter(); r = f(); sync(); return time.perf_counter() - t0, r

def ms(s:float)->str: return f'{s*1e3:.1f} ms'

def screenshot(i:int, size:tuple):
    "A synthetic screenshot: panels and text, different per i"
    from PIL import Image, ImageDraw
    im = Image.new('RGB', size, (240, 240, 240)); d = ImageDraw.Draw(im); w, h = size
    for k in range(12):
        x, y = (37*k*(i+3)) % w, (53*k*(i+5)) % h
        d.rectangle([x, y, x + w//6, y + h//10], outline=(20*k % 255, 90, 160), fill=((i*40+k*15) % 255, 200, 220))
        d.text((x+4, y+4), f'{TEXTS[(i+k) % len(TEXTS)]} {i}{k}', fill=(0, 0, 0))
    return im

def build_model(shapes:str, path:Path)->Path:
    "A Qwen3-VL with random weights and a processor, saved under `path` (what a user's checkpoint looks like)"
    import torch
    from moe_router import backbone as bb
    if shapes == 'tiny': return bb.build_tiny(path)
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen2VLImageProcessor
    tok = bb.build_tokenizer(bb.tiny_corpus()); ids = tok.convert_tokens_to_ids
    cfg = Qwen3VLConfig(text_config=QWEN3VL_8B['text'], vision_config=QWEN3VL_8B['vision'], tie_word_embeddings=False,
                        image_token_id=ids('<|image_pad|>'), video_token_id=ids('<|video_pad|>'),
                        vision_start_token_id=ids('<|vision_start|>'), vision_end_token_id=ids('<|vision_end|>'))
    with torch.device('cuda'): m = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    m.generation_config.eos_token_id = tok.eos_token_id; m.generation_config.pad_token_id = tok.pad_token_id
    # Qwen2VLImageProcessor is the torchvision backend in transformers 5.x (installed on the GPU machine)
    ip = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=dict(shortest_edge=64*32*32, longest_edge=16384*32*32))
    try:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
        proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen3VLVideoProcessor(), chat_template=bb.CHAT_TEMPLATE)
    except (ImportError, ValueError, TypeError):
        proc = bb.TinyQwen3VLProcessor(image_processor=ip, tokenizer=tok, chat_template=bb.CHAT_TEMPLATE)
    with bb.quiet_hf(): m.save_pretrained(path); proc.save_pretrained(path)
    del m; torch.cuda.empty_cache()
    return path

def make_adapters(model, out:Path, r:int=16):
    "Three task LoRAs of the project's `lora_config` (random, non-zero B) saved as PEFT adapters; the model is left bare"
    import torch
    from peft import get_peft_model
    from moe_router import backbone as bb, lora
    cfg = lambda: lora.lora_config(r=r, alpha=2*r, dropout=0.0)
    pm = get_peft_model(model, cfg(), adapter_name=EXPERTS[0])
    for e in EXPERTS[1:]: pm.add_adapter(e, cfg())
    g = torch.Generator().manual_seed(0); paths = {}
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_B' in n: p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.dtype))
    n_lora = sum(p.numel() for n, p in pm.named_parameters() if f'.{EXPERTS[0]}.' in n)
    with bb.quiet_hf():
        for e in EXPERTS:
            pm.save_pretrained(out/'tasks', selected_adapters=[e], save_embedding_layers=False)
            src = out/'tasks'/e if e != 'default' and (out/'tasks'/e).is_dir() else out/'tasks'
            paths[e] = str(src)
    (out/'loras.json').write_text(json.dumps(paths))
    return pm.unload(), paths, n_lora

def make_head(model, out:Path)->Path:
    "A router head in the project's checkpoint format (random weights; `ocr` never wins, so no request falls back)"
    import torch
    from moe_router import backbone as bb, head as hd
    torch.manual_seed(0)
    head = hd.RouterHead(model.config.get_text_config().hidden_size, len(LABELS))
    with torch.no_grad(): head.net[-1].bias[LABELS.index('ocr')] = -30.0
    info = dict(labels=LABELS, label_map={n: i for i, n in enumerate(LABELS)}, pooling='last', prompt_version=bb.PROMPT_VERSION,
                base_model_id=model.name_or_path, backbone=bb.backbone_fingerprint(model))
    return hd.save_head(out/'router-head.pt', head, info)

def stack_kw(cache_len:int)->dict:
    "The pipeline settings every process of the run uses (forced 40-token answers, one static cache length)"
    return dict(fallback='base', max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, batch_size=16, max_cache_len=cache_len)


def probe(work:Path, cache:str, sizes:tuple, compile_mode:str=None)->dict:
    "Start-up in this fresh process: load the saved model and stack, start (compile cache + warm-up), answer one request"
    t_proc = float(os.environ.get('BENCH_T0', T_START)); t0 = time.time()
    import torch
    from moe_router import backbone as bb
    from moe_router.infer import StackedPipeline
    t_imp = time.time()
    StackedPipeline.step_compile = compile_mode
    meta = json.loads((work/'stack.json').read_text())
    model, proc = bb.load_backbone(str(work/'model'))
    pipe = StackedPipeline.load(json.loads((work/'loras.json').read_text()), str(work/'router-head.pt'), backbone=(model, proc),
                                fast=True, **stack_kw(meta['cache_len']))
    t_load = time.time()
    st = pipe.start(cache or None, sizes)
    t_start = time.time()
    r = pipe(dict(text=TEXTS[0], image_path=str(work/'shot0.png')))
    sync(); t_end = time.time()
    from torch._dynamo.utils import counters
    hits = {k: v for c in ('inductor', 'aot_autograd') for k, v in counters[c].items() if 'cache' in k}
    return dict(cache_counters=hits, to_first_answer=t_end - t_proc, process_and_imports=t_imp - t_proc, load=t_load - t_imp, start=st,
                start_secs=t_start - t_load, first_answer=t_end - t_start, fast=pipe.fast, answer=r.text, adapter=r.adapter)


class Bench:
    "The measurements, one method per section; rows for the table, raw figures for the JSON, answer pairs to compare"
    def __init__(self, shapes:str, work:Path, out:Path, budget:float, compile_mode:str=None):
        import torch
        self.shapes, self.work, self.out, self.budget, self.compile_mode = shapes, work, out, budget, compile_mode
        self.big = shapes == '8b'; self.cuda = self.big and torch.cuda.is_available()
        self.rows, self.notes, self.res, self.answers, self.skipped, self.errors = [], [], {}, {}, [], {}
        self.eager_steps = False
        self.n_rep, self.size = (3, (1280, 800)) if self.big else (5, (320, 200))
        card = torch.cuda.get_device_name() if self.cuda else 'cpu'
        self.card = next((k for k in BANDWIDTH if k in card), 'H100' if self.cuda else None)
        self.path = out/f"gpu-{shapes}-{(self.card or 'cpu').lower()}.json"

    def row(self, figure:str, value:str, note:str=''):
        self.rows.append(dict(figure=figure, value=value, note=note))
        print(f'  {figure}: {value} {note}', file=sys.stderr, flush=True)

    def left(self)->float: return self.budget - (time.time() - T_START)

    def section(self, name:str, f):
        "Run one section if it still fits the budget; an error is recorded and the run goes on; the JSON is written after it"
        need = NEED.get(name, 30) if self.big else 0
        if self.left() < need:
            self.skipped.append(name); print(f'== {name}: skipped ({self.left():.0f} s left, needs about {need} s)', file=sys.stderr, flush=True)
        else:
            print(f'== {name} ({self.left():.0f} s left)', file=sys.stderr, flush=True); t0 = time.time()
            try: f()
            except Exception as e:
                self.errors[name] = f'{type(e).__name__}: {str(e)[:300]}'; traceback.print_exc()
            print(f'   {name}: {time.time() - t0:.1f} s', file=sys.stderr, flush=True)
        self.save()

    def setup(self):
        import torch, transformers, peft
        from moe_router import backbone as bb
        from moe_router.infer import StackedPipeline
        from moe_router.decode import cache_len
        from moe_router.experts import encode_task
        t_build, self.mpath = timed(lambda: build_model(self.shapes, self.work/'model'))
        t_load, (model, self.proc) = timed(lambda: bb.load_backbone(str(self.mpath)))
        self.dev = next(model.parameters()).device
        model, self.loras, n_lora = make_adapters(model, self.work)
        head = make_head(model, self.work)
        for i in range(12): screenshot(i, self.size).save(self.work/f'shot{i}.png')
        self.reqs = [dict(text=TEXTS[i % len(TEXTS)], image_path=str(self.work/f'shot{i}.png')) for i in range(12)]
        self.tok = self.proc.tokenizer
        enc = lambda rows: {k: v.to(self.dev) for k, v in encode_task(self.proc, rows).items()}
        self.enc1, self.enc4 = enc(self.reqs[:1]), enc(self.reqs[:4])
        self.L = cache_len(self.enc1['input_ids'].shape[1] + 32, NEW_TOKENS + 1)   # one cache length for the whole run
        (self.work/'stack.json').write_text(json.dumps(dict(cache_len=self.L)))
        StackedPipeline.step_compile = self.compile_mode
        self.pipe = StackedPipeline.load(self.loras, str(head), backbone=(model, self.proc), fast=False, share_vision=False, **stack_kw(self.L))
        n_img = int((self.enc1['input_ids'] == self.tok.convert_tokens_to_ids('<|image_pad|>')).sum())
        where = f'cuda {torch.cuda.get_device_name()}' if self.cuda else 'CPU (1 thread)'
        self.notes += [f"{self.shapes} shapes, random weights, {where}, dtype {next(model.parameters()).dtype}; torch {torch.__version__}, "
                       f"transformers {transformers.__version__}, peft {peft.__version__}; 3 task LoRAs r=16 ({n_lora/1e6:.2f}M params each); "
                       f"build + save {t_build:.1f} s, load_backbone {t_load:.1f} s; image processor {type(self.proc.image_processor).__name__}",
                       f"screenshot {self.size[0]}x{self.size[1]} = {n_img} image tokens; {NEW_TOKENS}-token answers (forced); "
                       f"static cache {self.L} tokens"]

    def mode(self, fast:bool):
        "Eager (transformers' generate, adapters unmerged) or fast (folded adapter, GreedyDecoder, one vision pass)"
        self.pipe.restore(); self.pipe.fast = fast; self.pipe.share_vision = fast

    def start(self):
        "Start to the first answer in fresh processes: cold (no compile cache), then warm (the artifacts the cold one saved)"
        cache = self.work/'compile-cache-probe.bin'   # written by the cold process, read by the warm one
        for name in ('cold', 'warm'):
            env = dict(os.environ, BENCH_T0=str(time.time()), TORCHINDUCTOR_CACHE_DIR=str(self.work/f'inductor-{name}'),
                       TRITON_CACHE_DIR=str(self.work/f'triton-{name}'))   # empty caches: what a new container has
            cmd = [sys.executable, __file__, '--probe', str(cache), '--work', str(self.work), '--shapes', self.shapes]
            if self.compile_mode: cmd += ['--compile', self.compile_mode]
            cmd += ['--sizes', '1']
            need = (90 if name == 'cold' else 50) if self.big else 0
            if self.left() < need: self.skipped.append(f'start.{name}'); continue
            t0 = time.time(); p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=min(600, max(20, self.left() - 10)))
            wall = time.time() - t0
            got = next((json.loads(l[6:]) for l in p.stdout.splitlines() if l.startswith('PROBE ')), None)
            if got is None: raise RuntimeError(f'{name} start probe failed (exit {p.returncode}): {p.stderr.strip()[-400:]}')
            self.res.setdefault('start', {})[name] = dict(got, wall=wall)
            self.answers.setdefault('start', [[], []])
            st = got['start']
            self.row(f'start to first answer, {name} ({"no compile cache" if name == "cold" else "compile cache from the cold start"})',
                     f"{got['to_first_answer']:.1f} s", f"process + imports {got['process_and_imports']:.1f} s, load {got['load']:.1f} s, "
                     f"warm-up {st['seconds']:.1f} s (batch sizes {list(st['warmup'])}, cache loaded {st['cache_loaded']}, "
                     f"{st['cache_bytes']/1e6:.1f} MB saved), first answer {ms(got['first_answer'])}; fast path {got['fast']}; "
                     f"compile cache {got['cache_counters']}")
        self.res.setdefault('start', {})['cache_bytes'] = cache.stat().st_size if cache.exists() else 0

    def warm_main(self):
        "This process's own start: warm batch sizes 1 and 4 (compiling; its artifacts are saved for nothing else)"
        from moe_router.decode import GreedyDecoder
        self.mode(True)
        st = self.pipe.start(self.work/'compile-cache-main.bin', SIZES)
        self.res['start_main'] = st
        if not self.pipe.fast:   # the compiled step failed to warm up: measure GreedyDecoder with eager steps, and say so
            self.notes.append('the compiled decode step failed to warm up (see the log); fast rows use GreedyDecoder with eager steps')
            self.pipe.fast, self.pipe.decoder, self.eager_steps = True, GreedyDecoder(self.pipe.model, None), True
        self.notes.append(f"main process start: {json.dumps(st)}")

    def gen(self, n:int, **kw):
        return self.pipe.model.generate(**self.enc1, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                        eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id, **kw)

    def per_token(self, f)->float:
        "Seconds per decode step: (T+1 tokens - 1 token) / T, best of two, after a warm-up"
        f(2)
        t1 = min(timed(lambda: f(1))[0] for _ in range(2))
        tn = min(timed(lambda: f(NEW_TOKENS + 1))[0] for _ in range(2))
        return (tn - t1) / NEW_TOKENS

    def decode(self):
        import torch
        from moe_router.stack import BASE
        p, E = self.pipe, EXPERTS[0]
        with torch.no_grad():
            self.mode(False)
            with p.activate(BASE): d_base = self.per_token(self.gen)
            with p.activate(E): d_lora = self.per_token(self.gen)
            self.mode(True)
            fast = lambda enc: lambda n: p._decoder()(enc, n, self.L, [self.tok.eos_token_id], self.tok.pad_token_id, n)
            with p.activate(EXPERTS[1], merge=True): pass
            t_fold, _ = timed(lambda: p.merger.merge(E))       # fold another adapter into the working copy
            t_swap = min(timed(lambda: (p.merger.restore(), p.merger.merge(E)))[0] for _ in range(3))   # route and back: pointer swaps
            with p.activate(E, merge=True):
                t_first, _ = timed(lambda: fast(self.enc1)(NEW_TOKENS + 1))
                d_fast, d_fast4 = self.per_token(fast(self.enc1)), self.per_token(fast(self.enc4))
        lm_bytes = sum(x.numel()*x.element_size() for n, x in p.model.named_parameters()
                       if 'lora_' not in n and '.visual.' not in n and 'embed_tokens' not in n)
        bw = BANDWIDTH.get(self.card, CPU_BANDWIDTH); floor = lm_bytes / bw
        how = 'eager steps' if self.eager_steps or not (self.cuda or self.compile_mode) else f"step compiled ({self.compile_mode or 'CUDA graphs'})"
        self.row('decode, base model (generate)', f'{d_base*1e3:.2f} ms/token')
        self.row('decode, task LoRA eager (PEFT, unmerged, generate)', f'{d_lora*1e3:.2f} ms/token', f'{d_lora/d_base:.2f}x base')
        self.row(f'decode, fast path batch 1 (folded, GreedyDecoder, {how})', f'{d_fast*1e3:.2f} ms/token',
                 f'{d_fast/floor:.2f}x the floor; {d_lora/d_fast:.1f}x faster than LoRA eager; first call after start {t_first:.2f} s')
        self.row(f'decode, fast path batch 4', f'{d_fast4*1e3:.2f} ms/token per step', f'{d_fast4/floor:.2f}x the floor; {d_fast4/4*1e3:.2f} ms per answer token')
        self.row('decode, memory floor', f'{floor*1e3:.2f} ms/token',
                 f"{lm_bytes/1e6:.0f} MB LM + lm_head weights at {bw/1e9:.0f} GB/s ({self.card or 'assumed CPU'} spec)")
        self.row('fold an adapter into the working copy / return to it after routing', f'{ms(t_fold)} / {ms(t_swap)}', 'was: merge + exact restore every request')
        self.res['decode'] = dict(base=d_base, lora=d_lora, fast=d_fast, fast_b4=d_fast4, floor=floor, first_fast_call=t_first,
                                  merge_restore=t_fold, fold=t_fold, swap=t_swap, bandwidth=bw)

    def stacked(self):
        "Route + switch + generate, one request at a time: resident eager, resident fast, fresh base + adapter"
        walls, n_eager = {}, (2 if self.big else self.n_rep)
        for fast in (False, True):
            self.mode(fast); self.pipe.run(self.reqs[:1]); f0 = self.pipe.merger.merges
            runs = [timed(lambda: self.pipe.run([r])) for r in self.reqs[:self.n_rep if fast else n_eager]]
            walls[fast] = statistics.median(t for t, _ in runs)
            self.answers.setdefault('stacked', [[], []])[fast] = [o[0].text for _, o in runs]
        folds = self.pipe.merger.merges - f0
        same = [timed(lambda: self.pipe.run([dict(r, expert=EXPERTS[0])])) for r in self.reqs[:self.n_rep]]
        t_same = statistics.median(t for t, _ in same)
        n_fresh = 1 if self.big else 3
        fr = [timed(lambda: self.fresh(r)) for r in self.reqs[:n_fresh]]
        t_fresh, t_load = statistics.median(t for t, _ in fr), statistics.median(l for _, l in fr)
        self.row('stacked request, resident eager (fast=False)', ms(walls[False]), f'median of {n_eager}')
        self.row('stacked request, resident fast (fast=True), routed', ms(walls[True]),
                 f'{walls[False]/walls[True]:.1f}x faster than resident eager; {folds} folds in {self.n_rep} requests')
        self.row('stacked request, resident fast, the adapter already folded', ms(t_same), 'expert named; no fold')
        self.row('stacked request, fresh base + adapter per request', ms(t_fresh),
                 f'{ms(t_load)} of it loading; resident fast is {t_fresh/walls[True]:.1f}x faster, resident eager {t_fresh/walls[False]:.1f}x')
        self.res['stacked'] = dict(eager=walls[False], fast=walls[True], fast_same=t_same, folds=folds, fresh=t_fresh, fresh_load=t_load,
                                   n=self.n_rep, n_eager=n_eager, n_fresh=n_fresh)

    def fresh(self, r:dict)->float:
        "The original `stacked_inference.py`'s way: route, load a fresh base + LoRA, generate; returns the loading seconds"
        import torch
        from peft import PeftModel
        from moe_router import backbone as bb, experts
        self.mode(False); tgt = self.pipe.decide(self.pipe.route([r])[0])['target']
        tgt = tgt if tgt in self.loras else EXPERTS[0]
        t0 = time.perf_counter(); m, pr = bb.load_backbone(str(self.mpath))
        with bb.quiet_hf(): pm = PeftModel.from_pretrained(m, self.loras[tgt], adapter_name=tgt).eval()
        sync(); t_load = time.perf_counter() - t0
        e = {k: v.to(self.dev) for k, v in experts.encode_task(pr, [r]).items()}
        with torch.no_grad(): pm.generate(**e, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                          eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id)
        del pm, m
        if self.cuda: torch.cuda.empty_cache()
        return t_load

    def route(self):
        "The head's routing against a bare prefill of the router prompt: with the screenshot decoded ahead (as the batcher does) and from its file"
        import torch
        from moe_router import backbone as bb
        from moe_router.stack import BASE
        p, r0 = self.pipe, self.reqs[0]; self.mode(True)
        with p.activate(EXPERTS[0], merge=True): pass    # the fast path holds an adapter: routing swaps to the base and back
        renc = {k: v.to(self.dev) for k, v in bb.encode_router(self.proc, [r0], LABELS).items()}
        inner = bb.vl_model(p.model)
        def bare():
            with torch.no_grad(), p.activate(BASE): inner(**renc)
        bare(); t_bare = min(timed(bare)[0] for _ in range(self.n_rep))
        rp = p.prepare(r0); p.route([rp])
        t_route = min(timed(lambda: p.route([rp]))[0] for _ in range(self.n_rep))
        t_file = min(timed(lambda: p.route([r0]))[0] for _ in range(self.n_rep))
        t_pre = min(timed(lambda: bb.encode_router(self.proc, [rp], LABELS))[0] for _ in range(self.n_rep))
        t_dec = min(timed(lambda: p.prepare(r0))[0] for _ in range(self.n_rep))
        self.row('route (head, screenshot decoded ahead) vs bare prefill', f'{ms(t_route)} vs {ms(t_bare)}',
                 f'{t_route/t_bare:.2f}x; processor + tokenizing {ms(t_pre)} ({type(self.proc.image_processor).__name__})')
        self.row('route from the screenshot file (decoding on the critical path)', ms(t_file), f'{t_file/t_bare:.2f}x; decoding the PNG {ms(t_dec)}')
        self.res['route'] = dict(route=t_route, bare_prefill=t_bare, from_file=t_file, preprocess=t_pre, decode_png=t_dec)
        self.preprocessing(r0)

    def preprocessing(self, r0:dict):
        "The PIL and the torchvision image processors on the same screenshot, where torchvision is installed"
        from transformers.utils import is_torchvision_available
        if not is_torchvision_available(): self.notes.append('torchvision is not installed here: PIL image processor only'); return
        from transformers import Qwen2VLImageProcessor, Qwen2VLImageProcessorPil
        from PIL import Image
        kw = dict(patch_size=16, merge_size=2, temporal_patch_size=2, size=dict(self.proc.image_processor.size))
        im = Image.open(r0['image_path']).convert('RGB'); t = {}
        for name, cls in (('pil', Qwen2VLImageProcessorPil), ('torchvision', Qwen2VLImageProcessor)):
            ip = cls(**kw); ip(images=[im], return_tensors='pt')
            t[name] = min(timed(lambda: ip(images=[im], return_tensors='pt'))[0] for _ in range(self.n_rep))
        self.row('image preprocessing: PIL vs torchvision', f"{ms(t['pil'])} vs {ms(t['torchvision'])}", f'{self.size[0]}x{self.size[1]}')
        self.res['preprocess'] = t

    def shared_vision(self):
        "The same fast request (adapter held, so no fold), vision once vs twice, interleaved; and the parts it saves"
        from moe_router import backbone as bb
        p = self.pipe; self.mode(True); r = p.prepare(self.reqs[0]); calls, walls = {}, {True: [], False: []}
        for share in (True, False):
            p.share_vision = share
            with bb.count_vision_calls(p.model) as n: p.run([r])
            calls[share] = n[0]
        for _ in range(self.n_rep + 2):
            for share in (True, False): p.share_vision = share; walls[share].append(timed(lambda: p.run([r]))[0])
        renc = bb.encode_router(self.proc, [r], LABELS)
        vis = {k: renc[k].to(self.dev) for k in ('pixel_values', 'image_grid_thw')}
        t_tower = min(timed(lambda: bb.vl_model(p.model).get_image_features(**vis))[0] for _ in range(self.n_rep))
        med = {k: statistics.median(v) for k, v in walls.items()}; spread = {k: max(v) - min(v) for k, v in walls.items()}
        saved = med[False] - med[True]
        self.row('shared vision: fast request, vision once vs twice (interleaved)', f'{ms(med[True])} vs {ms(med[False])}',
                 f'saves {ms(saved)} ({100*saved/med[False]:.0f}%), n={len(walls[True])} each, spread {ms(spread[True])} / {ms(spread[False])}; '
                 f'tower calls {calls[True]} vs {calls[False]}; tower alone {ms(t_tower)}')
        self.res['shared_vision'] = dict(shared=med[True], twice=med[False], runs_shared=walls[True], runs_twice=walls[False],
                                         calls_shared=calls[True], calls_twice=calls[False], tower=t_tower)

    def batch12(self):
        "12 requests over 3 adapters (4 each), experts named: eager mixed, fast (the policy's choice), one by one"
        from moe_router.decode import DecodePolicy
        p = self.pipe; batch = [dict(r, expert=EXPERTS[i % 3]) for i, r in enumerate(self.reqs)]
        self.mode(False)
        t_mixed, o = timed(lambda: p.run(batch)); mixed = [x.text for x in o]
        self.mode(True); p.run(batch); t_fast, o = timed(lambda: p.run(batch)); fast = [x.text for x in o]; mode = p.last_decode
        self.mode(False); k = 3 if self.big else 12   # at 8b: 3 timed, x4 (stated)
        t_k, o = timed(lambda: [p.run([b])[0] for b in batch[:k]]); t_one = t_k * 12 / k
        self.answers['batch'] = [mixed, fast]; self.answers['one_by_one'] = [[x.text for x in o], fast[:k]]
        self.row('batch of 12 over 3 adapters: eager mixed (adapter_names)', f'{t_mixed:.2f} s', f'{t_one/t_mixed:.1f}x one by one')
        self.row(f'batch of 12 over 3 adapters: fast ({mode})', f'{t_fast:.2f} s', f'{t_one/t_fast:.1f}x one by one')
        self.row('batch of 12 over 3 adapters: one by one (eager)', f'{t_one:.2f} s', '3 timed x 4' if self.big else '')
        d = self.res.get('decode')
        if d:
            pol = DecodePolicy(fast_ms=d['fast']*1e3, mixed_ms=d['lora']*1e3, merge_ms=d['fold']*1e3)
            self.notes.append(f"decode policy with these costs: grouped while adapter groups <= {pol.max_groups(NEW_TOKENS)} (T={NEW_TOKENS}); "
                              f"DecodePolicy(fast_ms={pol.fast_ms:.1f}, mixed_ms={pol.mixed_ms:.1f}, merge_ms={pol.merge_ms:.1f})")
        self.res['batch12'] = dict(mixed=t_mixed, fast=t_fast, one_by_one=t_one, mode=mode)

    def alternate(self):
        "Adapters A, A, B, A one request at a time: every fast answer against the eager one, and the folds it took"
        seq = [EXPERTS[0], EXPERTS[0], EXPERTS[1], EXPERTS[0]]
        reqs = [dict(r, expert=e) for r, e in zip(self.reqs[4:8], seq)]
        self.mode(False); eager = [self.pipe.run([r])[0].text for r in reqs]
        self.mode(True); self.pipe.run([dict(reqs[0], expert=EXPERTS[2])]); f0 = self.pipe.merger.merges
        fast = [self.pipe.run([r])[0].text for r in reqs]
        self.answers['alternate'] = [eager, fast]
        self.res['alternate'] = dict(sequence=seq, folds=self.pipe.merger.merges - f0)
        self.row('adapters A, A, B, A, one at a time (fast)', f'{self.pipe.merger.merges - f0} folds', 'A, B, A again; the second A: none')

    def save(self):
        pairs = [(e, f) for a, b in self.answers.values() for e, f in zip(a, b)]
        self.res.update(identical=sum(e == f for e, f in pairs), compared=len(pairs), wall=time.time() - T_START, notes=self.notes,
                        rows=self.rows, shapes=self.shapes, skipped=self.skipped, errors=self.errors, complete=False)
        tmp = self.path.with_name(self.path.name + '.partial')
        tmp.write_text(json.dumps(self.res, indent=2, default=str)); tmp.replace(self.path)

    def report(self, complete:bool)->int:
        self.save(); self.res['complete'] = complete and not self.skipped and not self.errors; self.save()
        print(f'| figure ({self.shapes} shapes) | value | note |\n|---|---|---|')
        for r in self.rows: print(f"| {r['figure']} | {r['value']} | {r['note']} |")
        print(); print('\n'.join(f'- {n}' for n in self.notes + [f'wall time {self.res["wall"]:.0f} s; wrote {self.path}']))
        if self.skipped: print(f'- skipped (time budget): {", ".join(self.skipped)}')
        for k, v in self.errors.items(): print(f'- error in {k}: {v}')
        print(f'identical to eager: {self.res["identical"]}/{self.res["compared"]}')
        return 0 if complete and not self.errors else 1


def _interrupt(*_): raise KeyboardInterrupt('time limit')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--shapes', choices=['tiny', '8b'], default='tiny', help='tiny: the CPU backbone; 8b: Qwen3-VL-8B shapes on one GPU')
    ap.add_argument('--out', default='bench/out/gpu-tiny', help='directory for gpu-<shapes>-<device>.json')
    ap.add_argument('--work', default=None, help='where the random model is saved (default: a temporary directory, removed afterwards)')
    ap.add_argument('--budget', type=float, default=None, help='seconds for the whole run; later sections are skipped (default 330 at 8b)')
    ap.add_argument('--compile', default=None, help="the decode step's dynamo backend (default: CUDA graphs on CUDA, eager steps elsewhere); "
                                                   "e.g. 'inductor' exercises the compile cache on a CPU")
    ap.add_argument('--probe', default=None, help=argparse.SUPPRESS)   # start-up probe: the compile cache file
    ap.add_argument('--sizes', default='1,4', help=argparse.SUPPRESS)
    ap.add_argument('--sections', default=None, help='comma-separated sections to run (default: all), e.g. start for the start-up probes alone')
    a = ap.parse_args(argv)
    import torch
    if a.shapes == 'tiny': torch.set_num_threads(1)
    if a.probe is not None:
        print('PROBE ' + json.dumps(probe(Path(a.work), a.probe, tuple(int(s) for s in a.sizes.split(',')), a.compile), default=str)); return 0
    if a.shapes == '8b' and not torch.cuda.is_available():
        print('bench_gpu: --shapes 8b needs a CUDA GPU (one H100 or H200, about 60 GB free); none is visible. '
              'Run --shapes tiny on the CPU, or this command on the GPU machine (bench/gpu_run.sh).', file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix='bench-gpu-'))
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(a.shapes, work, out, a.budget or (330 if a.shapes == '8b' else 1e9), a.compile)
    complete = False
    try:
        b.setup(); b.save()
        for name in ('warm_main', 'decode', 'stacked', 'alternate', 'route', 'batch12', 'start', 'shared_vision'):
            if a.sections and name not in a.sections.split(','): continue
            b.section(name, getattr(b, name))
        complete = True
    except KeyboardInterrupt as e:
        b.errors['interrupted'] = f'{e or "interrupted"} after {time.time() - T_START:.0f} s'
    finally:
        rc = b.report(complete)
        if not a.work: shutil.rmtree(work, ignore_errors=True)
    return rc

if __name__ == '__main__': sys.exit(main())
