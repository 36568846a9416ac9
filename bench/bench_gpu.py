"""Real-scale speed (issue 12): decode paths, the stacked request, routing, shared vision and a mixed batch on a
Qwen3-VL with random weights, saved to disk and loaded through `load_backbone` as a user's model would be, with
three task LoRAs of the project's `lora_config` and a router head, driven through `StackedPipeline`.

  python bench/bench_gpu.py --shapes tiny --out bench/out/gpu-tiny   # CPU, under 2 minutes (the default)
  python bench/bench_gpu.py --shapes 8b   --out /tmp/gpu-8b          # one H100/H200, under 5 minutes (exit 2 without CUDA)

Prints a markdown table, ends with `fast path answers identical to eager: N/N` and writes DIR/bench_gpu.json.
The eager path is `StackedPipeline(fast=False, share_vision=False)` (today's), the fast one `fast=True` (on the CPU:
merged + static cache, not compiled). It imports only the model path of moe_router (no modal, trl or datasets).
No timed assertions: the figures are printed, never checked.
"""
import argparse, json, os, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path
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
    from moe_router import backbone as bb, routers
    cfg = lambda: routers.lora_config(r=r, alpha=2*r, dropout=0.0)
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
    return pm.unload(), paths, n_lora

def make_head(model, out:Path)->Path:
    "A router head in the project's checkpoint format (random weights; `ocr` never wins, so no request falls back)"
    import torch
    from moe_router import backbone as bb, routers
    torch.manual_seed(0)
    head = routers.RouterHead(model.config.get_text_config().hidden_size, len(LABELS))
    with torch.no_grad(): head.net[-1].bias[LABELS.index('ocr')] = -30.0
    info = dict(labels=LABELS, label_map={n: i for i, n in enumerate(LABELS)}, pooling='last', prompt_version=bb.PROMPT_VERSION,
                base_model_id=model.name_or_path, backbone=bb.backbone_fingerprint(model))
    return routers.save_head(out/'router-head.pt', head, info)


class Bench:
    "The measurements, one method per section; rows for the table, raw figures for the JSON, answer pairs to compare"
    def __init__(self, shapes:str, work:Path):
        import torch
        self.shapes, self.work, self.big = shapes, work, shapes == '8b'
        self.cuda = self.big and torch.cuda.is_available()
        self.rows, self.notes, self.res, self.answers = [], [], {}, {}
        self.n_rep, self.size = (3, (1280, 800)) if self.big else (5, (320, 200))

    def row(self, figure:str, value:str, note:str=''):
        self.rows.append(dict(figure=figure, value=value, note=note))
        print(f'  {figure}: {value} {note}', file=sys.stderr, flush=True)

    def setup(self):
        import torch, transformers, peft
        from moe_router import backbone as bb
        from moe_router.infer import StackedPipeline
        t_build, self.mpath = timed(lambda: build_model(self.shapes, self.work/'model'))
        t_load, (model, self.proc) = timed(lambda: bb.load_backbone(str(self.mpath)))
        self.dev = next(model.parameters()).device
        model, self.loras, n_lora = make_adapters(model, self.work)
        self.pipe = StackedPipeline.load(self.loras, str(make_head(model, self.work)), backbone=(model, self.proc), fallback='base',
                                         max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, batch_size=16, fast=False, share_vision=False)
        for i in range(12): screenshot(i, self.size).save(self.work/f'shot{i}.png')
        self.reqs = [dict(text=TEXTS[i % len(TEXTS)], image_path=str(self.work/f'shot{i}.png')) for i in range(12)]
        self.tok = self.proc.tokenizer
        enc1 = bb.encode_chat(self.proc, [[{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': TEXTS[0]}]}]],
                              [screenshot(0, self.size)])
        self.enc1 = {k: v.to(self.dev) for k, v in enc1.items()}
        from moe_router.infer import cache_len   # one static cache size for every call: one compilation per batch size
        self.pipe.max_cache_len = cache_len(enc1['input_ids'].shape[1] + 32, NEW_TOKENS + 1)
        n_img = int((enc1['input_ids'] == self.tok.convert_tokens_to_ids('<|image_pad|>')).sum())
        where = f'cuda {torch.cuda.get_device_name()}' if self.cuda else 'CPU (1 thread)'
        self.notes += [f"{self.shapes} shapes, random weights, {where}, dtype {next(model.parameters()).dtype}; torch {torch.__version__}, "
                       f"transformers {transformers.__version__}, peft {peft.__version__}; 3 task LoRAs r=16 ({n_lora/1e6:.2f}M params each); "
                       f"build {t_build:.1f} s, load_backbone {t_load:.1f} s; image processor {type(self.proc.image_processor).__name__}",
                       f"screenshot {self.size[0]}x{self.size[1]} = {n_img} image tokens; {NEW_TOKENS}-token answers (forced)"]

    def mode(self, fast:bool):
        "Eager (today's path) or fast (decode per batch, one vision pass)"
        self.pipe.restore(); self.pipe.fast = fast; self.pipe.share_vision = fast

    def gen(self, n:int, **kw):
        return self.pipe.model.generate(**self.enc1, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                        eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id, **kw)

    def per_token(self, **kw)->float:
        "Seconds per decode step: (T+1 tokens - 1 token) / T, best of two, after a warm-up (and compile)"
        self.gen(2, **kw)
        t1 = min(timed(lambda: self.gen(1, **kw))[0] for _ in range(2))
        tn = min(timed(lambda: self.gen(NEW_TOKENS + 1, **kw))[0] for _ in range(2))
        return (tn - t1) / NEW_TOKENS

    def decode(self):
        import torch
        from moe_router.infer import BASE, decode_kwargs
        p, E = self.pipe, EXPERTS[0]
        fast_kw = decode_kwargs(self.cuda, p.max_cache_len)
        with torch.no_grad():
            with p.activate(BASE): d_base = self.per_token()
            with p.activate(E): d_lora = self.per_token()
            with p.activate(E, merge=True):
                t_first, _ = timed(lambda: self.gen(NEW_TOKENS + 1, **fast_kw))
                d_fast = self.per_token(**fast_kw)
            t_mr = min(timed(lambda: (p.merger.merge(EXPERTS[1]), p.merger.restore()))[0] for _ in range(3))
        lm_bytes = sum(x.numel()*x.element_size() for n, x in p.model.named_parameters()
                       if 'lora_' not in n and '.visual.' not in n and 'embed_tokens' not in n)
        card = next((k for k in BANDWIDTH if self.cuda and k in torch.cuda.get_device_name()), None)
        bw = BANDWIDTH.get(card, 3.35e12 if self.cuda else CPU_BANDWIDTH); floor = lm_bytes / bw
        compiled = ' + compiled decode step' if self.cuda else ', not compiled on the CPU'
        self.row('decode, base model', f'{d_base*1e3:.2f} ms/token')
        self.row('decode, task LoRA eager (PEFT, unmerged)', f'{d_lora*1e3:.2f} ms/token', f'{d_lora/d_base:.2f}x base')
        self.row(f'decode, fast path (merged + static cache{compiled})', f'{d_fast*1e3:.2f} ms/token',
                 f'{d_lora/d_fast:.2f}x faster than LoRA eager; first call {t_first:.1f} s')
        self.row('decode, memory floor', f'{floor*1e3:.2f} ms/token',
                 f"{lm_bytes/1e6:.0f} MB LM + lm_head weights at {bw/1e9:.0f} GB/s ({card or ('H100' if self.cuda else 'assumed CPU')} spec)")
        self.row('merge + exact restore of one adapter', ms(t_mr))
        self.res['decode'] = dict(base=d_base, lora=d_lora, fast=d_fast, floor=floor, first_fast_call=t_first, merge_restore=t_mr, bandwidth=bw)

    def stacked(self):
        "Route + switch + generate, one request at a time: resident eager, resident fast, fresh base + adapter"
        walls = {}
        for fast in (False, True):
            self.mode(fast); self.pipe.run(self.reqs[:1])
            runs = [timed(lambda: self.pipe.run([r])) for r in self.reqs[:self.n_rep]]
            walls[fast] = statistics.median(t for t, _ in runs); self.answers.setdefault('stacked', []).append([o[0].text for _, o in runs])
        n_fresh = 1 if self.big else 3
        fr = [timed(lambda: self.fresh(r)) for r in self.reqs[:n_fresh]]
        t_fresh, t_load = statistics.median(t for t, _ in fr), statistics.median(l for _, l in fr)
        self.row('stacked request, resident eager (fast=False)', ms(walls[False]))
        self.row('stacked request, resident fast (fast=True)', ms(walls[True]), f'{walls[False]/walls[True]:.2f}x faster than resident eager')
        self.row('stacked request, fresh base + adapter per request', ms(t_fresh),
                 f'{ms(t_load)} of it loading; resident fast is {t_fresh/walls[True]:.1f}x faster, resident eager {t_fresh/walls[False]:.1f}x')
        self.res['stacked'] = dict(eager=walls[False], fast=walls[True], fresh=t_fresh, fresh_load=t_load, n=self.n_rep, n_fresh=n_fresh)

    def fresh(self, r:dict)->float:
        "The seed's way: route, then load_backbone + PeftModel.from_pretrained + generate; returns the loading seconds"
        import torch
        from peft import PeftModel
        from moe_router import backbone as bb, experts
        self.mode(False); tgt = self.pipe.choose(self.pipe.route([r])[0])['target']
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
        "The head's routing (preprocessing included) against a bare prefill of the router prompt"
        import torch
        from moe_router import backbone as bb
        from moe_router.infer import BASE
        p, r0 = self.pipe, self.reqs[0]; self.mode(False)
        renc = {k: v.to(self.dev) for k, v in bb.encode_router(self.proc, [r0], LABELS).items()}
        inner = bb.vl_model(p.model)
        def bare():
            with torch.no_grad(), p.activate(BASE): inner(**renc)
        bare(); t_bare = min(timed(bare)[0] for _ in range(self.n_rep))
        p.route([r0]); t_route = min(timed(lambda: p.route([r0]))[0] for _ in range(self.n_rep))
        t_pre = min(timed(lambda: bb.encode_router(self.proc, [r0], LABELS))[0] for _ in range(self.n_rep))
        self.row('route (head, preprocessing included) vs bare prefill', f'{ms(t_route)} vs {ms(t_bare)}',
                 f'{t_route/t_bare:.2f}x; preprocessing + tokenizing {ms(t_pre)} ({type(self.proc.image_processor).__name__})')
        self.res['route'] = dict(route=t_route, bare_prefill=t_bare, preprocess=t_pre)
        self.preprocessing(r0)

    def preprocessing(self, r0:dict):
        "The PIL and the torchvision image processors on the same screenshot (item 3), where torchvision is installed"
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
        "The fast stacked request with the screenshot through the tower once, against twice"
        from moe_router import backbone as bb
        p = self.pipe; self.mode(True); calls, walls = {}, {}
        for share in (True, False):
            p.share_vision = share
            with bb.count_vision_calls(p.model) as n: p.run([self.reqs[1]])
            calls[share] = n[0]; walls[share] = statistics.median(timed(lambda: p.run([r]))[0] for r in self.reqs[:self.n_rep])
        renc = bb.encode_router(self.proc, [self.reqs[0]], LABELS)
        vis = {k: renc[k].to(self.dev) for k in ('pixel_values', 'image_grid_thw')}
        t_tower = min(timed(lambda: bb.vl_model(p.model).get_image_features(**vis))[0] for _ in range(self.n_rep))
        saved = walls[False] - walls[True]
        self.row('shared vision: fast stacked request, vision once vs twice', f'{ms(walls[True])} vs {ms(walls[False])}',
                 f'saves {ms(saved)} ({100*saved/walls[False]:.0f}%); tower calls {calls[True]} vs {calls[False]}; tower alone {ms(t_tower)}')
        self.res['shared_vision'] = dict(shared=walls[True], twice=walls[False], calls_shared=calls[True], calls_twice=calls[False], tower=t_tower)

    def batch12(self):
        "12 requests over 3 adapters (4 each), experts named: eager mixed, fast (the policy's choice), one by one"
        from moe_router.infer import DecodePolicy
        p = self.pipe; batch = [dict(r, expert=EXPERTS[i % 3]) for i, r in enumerate(self.reqs)]
        self.mode(False); p.run(batch[:3])
        t_mixed, o = timed(lambda: p.run(batch)); mixed = [x.text for x in o]
        self.mode(True); p.run(batch); t_fast, o = timed(lambda: p.run(batch)); fast = [x.text for x in o]; mode = p.last_decode
        self.mode(False); k = 3 if self.big else 12   # at 8b: 3 timed, x4 (stated)
        t_k, o = timed(lambda: [p.run([b])[0] for b in batch[:k]]); t_one = t_k * 12 / k
        self.answers['batch'] = [mixed, fast]; self.answers['one_by_one'] = [[x.text for x in o], fast[:k]]
        self.row('batch of 12 over 3 adapters: eager mixed (adapter_names)', f'{t_mixed:.2f} s', f'{t_one/t_mixed:.1f}x one by one')
        self.row(f'batch of 12 over 3 adapters: fast ({mode})', f'{t_fast:.2f} s', f'{t_one/t_fast:.1f}x one by one')
        self.row('batch of 12 over 3 adapters: one by one (eager)', f'{t_one:.2f} s', '3 timed x 4' if self.big else '')
        d = self.res['decode']
        pol = DecodePolicy(fast_ms=d['fast']*1e3, mixed_ms=d['lora']*1e3, merge_ms=d['merge_restore']*1e3)
        self.notes.append(f"decode policy with these costs: grouped while adapter groups <= {pol.max_groups(NEW_TOKENS)} (T={NEW_TOKENS}); "
                          f"DecodePolicy(fast_ms={pol.fast_ms:.1f}, mixed_ms={pol.mixed_ms:.1f}, merge_ms={pol.merge_ms:.1f})")
        self.res['batch12'] = dict(mixed=t_mixed, fast=t_fast, one_by_one=t_one, mode=mode)

    def report(self, out:Path, t0:float)->int:
        pairs = [(e, f) for a, b in self.answers.values() for e, f in zip(a, b)]
        same = sum(e == f for e, f in pairs)
        self.res.update(identical=same, compared=len(pairs), wall=time.perf_counter() - t0, notes=self.notes, rows=self.rows, shapes=self.shapes)
        (out/'bench_gpu.json').write_text(json.dumps(self.res, indent=2, default=str))
        print(f'| figure ({self.shapes} shapes) | value | note |\n|---|---|---|')
        for r in self.rows: print(f"| {r['figure']} | {r['value']} | {r['note']} |")
        print(); print('\n'.join(f'- {n}' for n in self.notes + [f'wall time {self.res["wall"]:.0f} s']))
        print(f'fast path answers identical to eager: {same}/{len(pairs)}')
        return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--shapes', choices=['tiny', '8b'], default='tiny', help='tiny: the CPU backbone; 8b: Qwen3-VL-8B shapes on one GPU')
    ap.add_argument('--out', default='bench/out/gpu-tiny', help='directory for bench_gpu.json')
    ap.add_argument('--work', default=None, help='where the random model is saved (default: a temporary directory, removed afterwards)')
    a = ap.parse_args(argv)
    import torch
    if a.shapes == '8b' and not torch.cuda.is_available():
        print('bench_gpu: --shapes 8b needs a CUDA GPU (one H100 or H200, about 45 GB free); none is visible. '
              'Run --shapes tiny on the CPU, or this command on the GPU machine (bench/gpu_run.sh).', file=sys.stderr)
        return 2
    if a.shapes == 'tiny': torch.set_num_threads(1)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix='bench-gpu-'))
    work.mkdir(parents=True, exist_ok=True); t0 = time.perf_counter()
    b = Bench(a.shapes, work)
    try:
        b.setup(); b.decode(); b.stacked(); b.route(); b.shared_vision(); b.batch12()
        return b.report(out, t0)
    finally:
        if not a.work: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': sys.exit(main())
