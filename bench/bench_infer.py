"""Stacked inference (moe_router.infer): one resident base with every LoRA loaded, against the way of the
original `modal/stacked_inference.py`: a fresh base + `PeftModel.from_pretrained` for every request.

1. The cost of choosing the expert, on its own: `AdapterSwitch.set` (what the pipeline uses), PEFT's own
   `set_adapter`, and a fresh base + `from_pretrained` (the original's way).
2. A whole request (route, choose, generate a tool-call-sized answer of NEW_TOKENS forced tokens), resident
   against reload; the shares of routing and of choosing the expert in a resident request.
3. A mixed batch (requests for 3 adapters) through `run(batch)` against one request at a time.
4. Qwen3-VL-8B: the switch measured on the real 8B module structure (built on the meta device, so no weights), against
   loading a fresh base + adapter, measured by bench_gpu.py --shapes 8b on a GPU (bench/gpu-8b-h200.json; estimates without it).

Tiny backbone, CPU, torch threads = 1. Writes bench/out/infer.json and prints a markdown table.
Run: .venv/bin/python bench/bench_infer.py
"""
import copy, json, os, shutil, statistics, tempfile, time, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
warnings.filterwarnings('ignore')
import torch
from peft import PeftModel, get_peft_model
from moe_router import backbone, lora, experts, synth, datagen
from moe_router.head import train_head
from moe_router.routing import load_split
from moe_router.infer import StackedPipeline
from moe_router.decode import AdapterSwitch

HERE = Path(__file__).resolve().parent
NEW_TOKENS = 40          # a tool call is 30-60 tokens; generation is forced to exactly this many
N_REQ = 12               # requests in the request and batch measurements (4 per adapter)
N_RELOAD = 5             # fresh-base reloads timed (each loads the whole model)
DISK_GBPS = 2.0          # assumed disk read rate for the 8B estimate (local NVMe-class; a network volume is slower)
HBM_TBPS, HBM_EFF = 3.35, 0.5 # H100 SXM memory bandwidth and the fraction HF generate reaches (8B decode is bandwidth-bound)
GPU_RUN = Path(__file__).resolve().parent/'gpu-8b-h200.json'  # bench_gpu.py --shapes 8b, measured on a GPU
EXPERTS = ['calendar', 'claim-window', 'provider-select']

def med(f, n:int, warmup:int=1)->float:
    "Median seconds of `f()` over `n` runs"
    for _ in range(warmup): f()
    ts = []
    for _ in range(n): t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def setup(tmp:Path):
    "Tiny backbone, synthetic experts, routing dataset, router head, 3 task LoRAs of train_task_lora's shape"
    model, proc = backbone.load_backbone('tiny')
    dirs = synth.make_synthetic_experts(tmp/'synth', per_expert=32, seed=0, test_per_expert=8)
    ds = datagen.build_routing_dataset(dict(dirs), tmp/'routing', train_samples=16, eval_samples=8, ocr_samples=8, log=None)
    head = train_head(ds, out=tmp/'head', backbone=(model, proc), epochs=5, log=None, progress=False)['path']
    loras = {}
    for i, e in enumerate(EXPERTS):  # untrained but non-zero LoRAs: the same size and compute as trained ones
        torch.manual_seed(i)
        pm = get_peft_model(copy.deepcopy(model), lora.lora_config(r=8, alpha=16, dropout=0.0))
        for n, p in pm.named_parameters():
            if 'lora_B' in n: torch.nn.init.normal_(p, std=0.02)
        with backbone.quiet_hf(): pm.save_pretrained(tmp/'tasks'/e/'final')
        loras[e] = str(tmp/'tasks'/e)
    test, _ = load_split(ds, 'test')
    per = {e: [s for s in test if s['adapter'] == e] for e in EXPERTS}
    reqs = [dict(text=s['text'], image_path=s['image_path']) for k in range(N_REQ // 3) for e in EXPERTS for s in [per[e][k]]]
    return model, proc, head, loras, reqs

def reload_expert(name:str, loras:dict):
    "The original `stacked_inference.py`'s way of choosing an expert: a fresh base from disk, then the LoRA"
    m, p = backbone.load_backbone('tiny')
    with backbone.quiet_hf(): pm = PeftModel.from_pretrained(m, str(Path(loras[name])/'final'), adapter_name=name)
    return pm.eval(), p

def reload_request(pipe, req, loras):
    "Route with the resident router, then answer on a freshly loaded base + LoRA (the original `stacked_inference.py`)"
    t0 = time.perf_counter()
    target = pipe.decide(pipe.route([req])[0])['target']
    t1 = time.perf_counter()
    pm, p = reload_expert(target if target in loras else EXPERTS[0], loras)
    t2 = time.perf_counter()
    enc = experts.encode_task(p, [req]); tok = p.tokenizer
    with torch.no_grad():
        pm.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    t3 = time.perf_counter()
    return dict(route=t1 - t0, switch=t2 - t1, generate=t3 - t2, total=t3 - t0)

def qwen3vl_8b_structure(n_adapters:int=3):
    "Qwen3-VL-8B-Instruct's module structure on the meta device (no weights), with LoRAs like the task LoRAs"
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    cfg = Qwen3VLConfig(tie_word_embeddings=False,
        text_config=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
                         max_position_embeddings=262144, rope_parameters=dict(rope_type='default', rope_theta=5e6,
                         mrope_section=[24, 20, 20], mrope_interleaved=True)),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                           deepstack_visual_indexes=[8, 16, 24]))
    with torch.device('meta'): m = Qwen3VLForConditionalGeneration(cfg)
    n_params = sum(p.numel() for p in m.parameters())
    pm = get_peft_model(m, lora.lora_config(r=16, alpha=32, dropout=0.0), adapter_name=EXPERTS[0])
    for e in EXPERTS[1:n_adapters]: pm.add_adapter(e, lora.lora_config(r=16, alpha=32, dropout=0.0))
    lora_params = sum(p.numel() for n, p in pm.named_parameters() if f'.{EXPERTS[0]}.' in n)
    return pm, n_params, lora_params

def fmt_t(s:float)->str:
    return f"{s*1e6:.0f} µs" if s < 1e-3 else (f"{s*1e3:.1f} ms" if s < 1 else f"{s:.2f} s")

def main():
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    rows, notes = [], []
    def row(figure, value, baseline, ratio, goal, met): rows.append(dict(figure=figure, value=value, baseline=baseline, ratio=ratio, goal=goal, met=met))
    try:
        model, proc, head, loras, reqs = setup(tmp)
        pipe = StackedPipeline.load(loras, head, backbone=(model, proc), fallback='base',
                                    max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, batch_size=N_REQ)
        # 1. choosing the expert, on its own
        it = iter(range(10**9))
        fast = med(lambda: pipe.switch.set(EXPERTS[next(it) % 3]), 3000, 30)
        peft = med(lambda: pipe.model.set_adapter(EXPERTS[next(it) % 3]), 300, 3)
        def _dis():
            with pipe.model.disable_adapter(): pass
        peft_dis = med(_dis, 100, 3)
        fast_dis = med(lambda: (pipe.switch.disable(), pipe.switch.enable()), 3000, 30)
        reload = med(lambda: reload_expert(EXPERTS[next(it) % 3], loras), N_RELOAD, 1)
        row('choose the expert: resident switch (AdapterSwitch.set)', fmt_t(fast), f"{fmt_t(reload)} (fresh base + from_pretrained)",
            f"{reload/fast:,.0f}x cheaper", '>= 20x cheaper', reload/fast >= 20)
        row("choose the expert: PEFT's own set_adapter", fmt_t(peft), fmt_t(reload), f"{reload/peft:,.0f}x cheaper", '>= 20x cheaper', reload/peft >= 20)
        row('base only: AdapterSwitch disable+enable vs PEFT disable_adapter()', fmt_t(fast_dis), fmt_t(peft_dis),
            f"{peft_dis/fast_dis:,.0f}x cheaper", '-', None)
        # 2. a whole request, one at a time (the pipeline groups a single request: set_adapter path)
        pipe.run(reqs[:2])  # warm up
        res, walls = [], []
        for r in reqs:
            t0 = time.perf_counter(); res.append(pipe(r)); walls.append(time.perf_counter() - t0)
        tm = {k: statistics.median(x.timings[k] for x in res) for k in ('route', 'switch', 'generate', 'total')}
        wall = statistics.median(walls)
        rel = [reload_request(pipe, r, loras) for r in reqs[:N_RELOAD]]
        rl = {k: statistics.median(x[k] for x in rel) for k in ('route', 'switch', 'generate', 'total')}
        row(f'whole request, {NEW_TOKENS} new tokens: resident', fmt_t(wall), f"{fmt_t(rl['total'])} (reload per request)",
            f"{rl['total']/wall:.1f}x faster", 'report both', None)
        share_sw, share_rt = tm['switch'] / wall, tm['route'] / wall
        row('share of choosing the expert in a resident request', f"{100*share_sw:.2f}%", f"{100*rl['switch']/rl['total']:.0f}% (reload)",
            '-', '<= 5%', share_sw <= 0.05)
        row('share of routing in a resident request', f"{100*share_rt:.1f}%", f"{100*rl['route']/rl['total']:.1f}% (reload)", '-', '-', None)
        # 3. a mixed batch of requests for 3 adapters
        pipe.mixed = True
        batch_t = min(med(lambda: pipe.run(reqs), 1, 0) for _ in range(2))
        pipe.mixed = False
        grouped_t = min(med(lambda: pipe.run(reqs), 1, 0) for _ in range(2))
        pipe.mixed = True
        single_t = min(med(lambda: [pipe(r) for r in reqs], 1, 0) for _ in range(2))
        n = len(reqs)
        row(f'mixed batch of {n} (3 adapters): run(batch), adapter_names', f"{n/batch_t:.1f} req/s", f"{n/single_t:.1f} req/s (one at a time)",
            f"{single_t/batch_t:.1f}x", '>= 2x', single_t/batch_t >= 2)
        row(f'mixed batch of {n}: run(batch), grouped (set_adapter per group)', f"{n/grouped_t:.1f} req/s", f"{n/single_t:.1f} req/s",
            f"{single_t/grouped_t:.1f}x", '>= 2x', single_t/grouped_t >= 2)
        # 4. Qwen3-VL-8B estimates
        pm8, n8, l8 = qwen3vl_8b_structure()
        sw8 = AdapterSwitch(pm8)
        fast8 = med(lambda: sw8.set(EXPERTS[next(it) % 3]), 200, 5)
        peft8 = med(lambda: pm8.set_adapter(EXPERTS[next(it) % 3]), 20, 2)
        def _dis8():
            with pm8.disable_adapter(): pass
        peft_dis8 = med(_dis8, 5, 1)
        gb = 2 * n8 / 1e9; lora_gb = 2 * l8 / 1e9
        gpu = json.loads(GPU_RUN.read_text()) if GPU_RUN.exists() else None
        if gpu:   # measured by bench_gpu.py --shapes 8b on a GPU: the resident fast request and the load of a fresh base + adapter
            load8, req8 = gpu['stacked']['fresh_load'], gpu['stacked']['fast']
            where = f"measured on an {gpu['notes'][0].split('cuda ')[1].split(',')[0].removeprefix('NVIDIA ')}"
        else:     # no GPU run: estimates from disk and HBM bandwidth, labelled as such
            load8 = (gb + lora_gb) / DISK_GBPS
            req8 = NEW_TOKENS * 2 * n8 / (HBM_TBPS * 1e12 * HBM_EFF) + 2 * 0.05
            where = 'estimated for an H100'
        row('Qwen3-VL-8B: choose the expert, resident switch (measured on its structure)', fmt_t(fast8),
            f"{load8:.1f} s (load a fresh base + adapter, {where})", f"{load8/fast8:,.0f}x cheaper", '>= 20x cheaper', load8/fast8 >= 20)
        row("Qwen3-VL-8B: PEFT set_adapter / disable_adapter() (measured on its structure)", f"{fmt_t(peft8)} / {fmt_t(peft_dis8)}",
            f"{load8:.1f} s", f"{load8/peft8:,.0f}x cheaper", '-', None)
        row(f'Qwen3-VL-8B: share of choosing the expert in a request ({req8:.2f} s, {where})', f"{100*fast8/req8:.3f}%",
            f"{100*peft8/req8:.1f}% with PEFT set_adapter; reload: {100*load8/(load8+req8):.0f}%", '-', '<= 5%', fast8/req8 <= 0.05)
        notes += [f"tiny backbone ({sum(p.numel() for p in model.parameters())/1e6:.2f}M params) on the CPU, torch threads = 1, "
                  f"3 task LoRAs (r=8, LM projections) + router head; medians (switch: 3000 runs; reload: {N_RELOAD})",
                  f"reload = load_backbone('tiny') from its disk cache + PeftModel.from_pretrained, "
                  "as the original stacked_inference.py did for every request",
                  f"requests: {N_REQ} test screenshots + instructions (4 per expert), every answer forced to {NEW_TOKENS} new tokens "
                  "(min_new_tokens = max_new_tokens), the size of a tool call",
                  f"resident request medians: route {fmt_t(tm['route'])}, switch {fmt_t(tm['switch'])}, generate {fmt_t(tm['generate'])}; "
                  f"reload request medians: route {fmt_t(rl['route'])}, load {fmt_t(rl['switch'])}, generate {fmt_t(rl['generate'])}",
                  f"8B switch: Qwen3-VL-8B's exact module structure ({n8/1e9:.2f}B params, {len(sw8.layers)} LoRA layers, "
                  "3 LoRAs r=16 on the LM projections) built on the meta device; switching touches no tensors, so its CPU cost is what a GPU "
                  "server pays too. PEFT's set_adapter walks every module, disable_adapter() also computes the model status",
                  (f"8B reload and request: {where} by `bench/bench_gpu.py --shapes 8b` ({GPU_RUN.name}): a fresh base + adapter "
                   f"loads in {load8:.2f} s, a resident request (route, switch, 40 new tokens, fast decode) takes {req8:.3f} s"
                   if gpu else f"8B reload and request: estimates ({gb:.1f} GB read at {DISK_GBPS:g} GB/s; {NEW_TOKENS} decode "
                   f"steps at {HBM_TBPS} TB/s x {HBM_EFF}), not measurements: run bench/gpu_run.sh on a GPU")]
        res = dict(title='Stacked inference: resident adapters vs reload per request (moe_router.infer)', rows=rows, notes=notes)
        (HERE/'out').mkdir(exist_ok=True); (HERE/'out'/'infer.json').write_text(json.dumps(res, indent=2))
        print('| figure | value | baseline | ratio | goal | met |\n|---|---|---|---|---|---|')
        for r in rows:
            met = '-' if r['met'] is None else ('yes' if r['met'] else 'no')
            print(f"| {r['figure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['goal']} | {met} |")
        print(); print('\n'.join(f'- {n}' for n in notes))
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
