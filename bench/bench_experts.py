"""Task experts on the synthetic skills (tiny backbone, CPU): does each expert learn its own domain, and does another
domain's expert get it wrong?

Trains one task LoRA per synthetic expert with `experts.TASK_RECIPE` (or the flags), on `--train` records each
(half of them shared instructions, as in the demo), then runs every expert on every domain's `--test` held-out
records. Goals (issue 18): on its own domain parse >= 95%, action >= 90%, coordinate within 50 >= 80%; on the
other domains, action at least 30 points lower.

Run: .venv/bin/python bench/bench_experts.py [--steps 600] [--lr 2e-3] [--r 32] [--train 200] [--test 30] [--seed 0]
Prints a markdown table and writes bench/out/experts.json.
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
import torch
from moe_router import synth
from moe_router.backbone import load_backbone
from moe_router.experts import TASK_RECIPE, train_expert_loras, peft_generate, read_expert
from moe_router.cost import expert_domain_accuracy

def main():
    ap = argparse.ArgumentParser()
    for k, v in dict(steps=TASK_RECIPE['max_steps'], lr=TASK_RECIPE['lr'], r=TASK_RECIPE['r'], train=200, test=30, seed=0).items():
        ap.add_argument(f'--{k}', type=type(v), default=v)
    a = ap.parse_args(); torch.set_num_threads(1)   # one thread: a shared machine's cores are not spun on
    tmp = Path(tempfile.mkdtemp()); t0 = time.perf_counter()
    dirs = synth.make_synthetic_experts(tmp/'synth', per_expert=a.train, test_per_expert=a.test, seed=a.seed, ambiguous_frac=0.5, system=False)
    loras = train_expert_loras(dirs, tmp/'task', backbone=load_backbone('tiny'), max_steps=a.steps, lr=a.lr, r=a.r, alpha=2*a.r,
                               seed=a.seed, progress=False)
    t_train = time.perf_counter() - t0
    test = [dict(r, adapter=e) for e, d in dirs.items() for r in read_expert(d, 'test')]
    m = expert_domain_accuracy(peft_generate(loras, max_new_tokens=64), test, progress=False)
    rows = []
    for i, e in enumerate(m['experts']):
        own, j = {k: m[k][i][m['domains'].index(e)] for k in ('parsed', 'action', 'coord')}, m['domains'].index(e)
        mis = sum(m['action'][i][k]*m['n'][d] for k, d in enumerate(m['domains']) if k != j) / sum(m['n'][d] for d in m['domains'] if d != e)
        rows.append(dict(expert=e, parse=own['parsed'], action=own['action'], coord=own['coord'], misrouted_action=round(mis, 4),
                         met=own['parsed'] >= .95 and own['action'] >= .9 and own['coord'] >= .8 and own['action'] - mis >= .3))
    print(f"Task LoRAs: {a.steps} steps, lr {a.lr}, r {a.r}, {a.train} train / {a.test} test records per expert, seed {a.seed}; "
          f"trained in {t_train:.0f} s\n")
    print('| expert | own parse | own action | own coordinate | misrouted action | goals met |\n|---|---|---|---|---|---|')
    for r in rows: print(f"| {r['expert']} | {r['parse']:.0%} | {r['action']:.0%} | {r['coord']:.0%} | {r['misrouted_action']:.0%} | {'yes' if r['met'] else 'no'} |")
    print('\n| expert \\ domain (action / coordinate) | ' + ' | '.join(m['domains']) + ' |\n' + '|---' * (len(m['domains'])+1) + '|')
    for i, e in enumerate(m['experts']): print(f"| {e} | " + ' | '.join(f"{m['action'][i][k]:.0%} / {m['coord'][i][k]:.0%}" for k in range(len(m['domains']))) + ' |')
    out = Path(__file__).parent/'out'; out.mkdir(exist_ok=True)
    (out/'experts.json').write_text(json.dumps(dict(args=vars(a), rows=rows, matrix=m, train_secs=round(t_train, 1)), indent=1))

if __name__ == '__main__': main()
