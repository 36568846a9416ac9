"""Write `nbs/fixtures/claimhawk-volume/`: the original system's artifacts as published (see the formats note):
a routing dataset as the original `modal/generate.py` wrote it (conversation records with `metadata`, `metadata.json`
with `counts`, screenshots as `<source_ds>/images/<file>` under the volume root), the history volume's
`<expert>/runs.jsonl`, and an original `eval-report.json`. Small PNGs, so the fixture stays a few kilobytes."""
import json, shutil
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]/'nbs'/'fixtures'/'claimhawk-volume'
EXPERTS = {'calendar': ('calendar--mike--20251120_180854', 'Click December {} in the calendar'),
           'claim-window': ('claim-window--mike--20251122_234849', 'Edit the claim window date field {}'),
           'provider-select': ('provider-select--mike--20251123_120000', 'Select provider number {} from the dropdown')}
DS = 'routing_20251125_052946'

def record(i, adapter, label, src, text):
    return {"id": f"{src}_{i:05d}", "image": f"{src}/images/{src}_{i:05d}.png",
            "conversations": [{"from": "human", "value": f"<image>\n{text.format(i + 1)}"}, {"from": "gpt", "value": str(label)}],
            "metadata": {"adapter": adapter, "label": label, "source_dataset": src}}

def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    splits, counts = {'train': [], 'val': [], 'test': []}, {}
    for label, (adapter, (src, text)) in enumerate(EXPERTS.items()):
        (ROOT/src/'images').mkdir(parents=True)
        for i in range(7):
            Image.new('RGB', (16, 12), (40 + 60*label, 90, 30*i)).save(ROOT/src/'images'/f'{src}_{i:05d}.png')
        recs = [record(i, adapter, label, src, text) for i in range(7)]
        splits['train'] += recs[:4]; splits['val'] += recs[4:5]; splits['test'] += recs[5:]
        counts[adapter] = {'train': 4, 'val': 1, 'test': 2}
        h = ROOT/'history'/adapter; h.mkdir(parents=True)
        runs = [{"run_name": "old", "dataset_name": f"{src}-old", "timestamp": "2025-11-01T10:00:00"},
                {"run_name": "prod", "dataset_name": src, "timestamp": "2025-11-24T09:30:00"}]
        (h/'runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in runs))
    d = ROOT/DS; d.mkdir()
    for k, v in splits.items(): (d/f'{k}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in v))
    (d/'data.jsonl').write_text((d/'train.jsonl').read_text() + (d/'val.jsonl').read_text())
    (d/'metadata.json').write_text(json.dumps({"dataset_name": DS, "created": "2025-11-25T05:29:46", "samples_per_adapter": 5,
        "test_per_adapter": 2, "seed": 42, "source_datasets": {a: s for a, (s, _) in EXPERTS.items()}, "counts": counts}, indent=2))
    (d/'eval-report.json').write_text(json.dumps({"run_name": "routing-20251125-052946", "dataset_name": f"datasets/{DS}",
        "checkpoint": "final", "eval_samples": 6, "timestamp": "2025-11-25T08:00:00",
        "accuracy": {"overall": 83.33, "per_class": {"calendar": 100.0, "claim-window": 50.0, "provider-select": 100.0}},
        "results": {"correct": 5, "total": 6, "per_class": {"calendar": {"correct": 2, "total": 2},
                    "claim-window": {"correct": 1, "total": 2}, "provider-select": {"correct": 2, "total": 2}}},
        "errors": [{"expected": "claim-window", "expected_label": 1, "predicted": "calendar", "predicted_label": 0,
                    "raw_output": "0", "correct": False}]}, indent=2))

if __name__ == '__main__': main()
