"""Data path throughput: samples per second from sample to model-ready batch (decode, preprocess, tokenize, mask,
collate), ours against TRL's DataCollatorForVisionLanguageModeling, per DataLoader worker count.

    python -m benchmarks.data [--samples 128] [--batch-size 8] [--workers 0,1,2] [--gpu-json gpu.json]

Arms, on the same ScienceQA-shaped samples (benchmarks/workload.py; real shared images when present):
  trl          TRL's vision collator on prompt/completion rows; `datasets` decodes the images on row access
  ours         lora_llava's Collator, images decoded and preprocessed every time (first epoch)
  ours+cache   the same with the pixel cache warm (every later epoch)
Each figure is the median of --repeats passes over all samples (the first batch of a pass is not timed, so
worker start-up is left out). With --gpu-json (benchmarks/gpu.py's output) the report also says how many samples
per second the GPU consumes at its measured tokens/s, assuming tokens/s holds at this data's mean row length.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def loader(arm: str, processor, samples, batch_size: int, workers: int, cache_dir: Path):
    from torch.utils.data import DataLoader

    from benchmarks.workload import trl_dataset
    from lora_llava.data.collate import Collator
    from lora_llava.data.image_cache import PixelCache

    if arm == "trl":
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        collate = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
        dataset = trl_dataset(samples)
    else:
        cache = PixelCache(processor.image_processor, cache_dir) if arm == "ours+cache" else None
        collate = Collator(processor, samples=samples, image_cache=cache)
        dataset = [{"sample_index": i} for i in range(len(samples))]
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers, shuffle=False)


def one_pass(batches) -> tuple[float, int]:
    """(seconds, samples) over all batches after the first."""
    iterator = iter(batches)
    next(iterator)
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += batch["input_ids"].shape[0]
    return time.perf_counter() - start, count


def measure(arm, processor, samples, args, workers, cache_dir) -> float:
    rates = []
    for _ in range(args.repeats):
        seconds, count = one_pass(loader(arm, processor, samples, args.batch_size, workers, cache_dir))
        rates.append(count / seconds)
    return statistics.median(rates)


def gpu_need(gpu_json: str | None, mean_tokens: float) -> list[tuple[str, float]]:
    """Samples/s each measured GPU setting consumes (ours, at its tokens/s, rows of `mean_tokens`)."""
    if not gpu_json:
        return []
    data = json.loads(Path(gpu_json).read_text())
    need = []
    for r in data["results"]:
        if r["arm"] == "ours" and not r.get("oom"):
            label = f"{r['quant']} b{r['batch']} ckpt {'on' if r['checkpointing'] else 'off'}"
            need.append((label, r["tokens_per_s"] / mean_tokens))
    return sorted(need, key=lambda item: -item[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--gpu-json", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from benchmarks.workload import load_processor, scienceqa_samples, shared_dir
    from lora_llava.data.collate import Collator, image_token_count
    from lora_llava.data.image_cache import PixelCache

    shared = shared_dir(args.shared)
    scratch = Path(tempfile.mkdtemp(prefix="bench-data-"))
    processor = load_processor(shared)
    samples = scienceqa_samples(shared, args.samples, args.seed, scratch / "images")
    PixelCache(processor.image_processor, scratch / "pixels").pixel_values(
        [(s.id, ref) for s in samples for ref in s.images])  # warm, as after the first epoch
    collator = Collator(processor)
    mean_tokens = statistics.mean(len(collator.encode(s)["input_ids"]) for s in samples)
    results = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        for arm in ("trl", "ours", "ours+cache"):
            results[f"{arm}/{workers}"] = measure(arm, processor, samples, args, workers, scratch / "pixels")
            print(f"{arm:<11} workers {workers}: {results[f'{arm}/{workers}']:8.1f} samples/s", flush=True)
    lines = [(f"data path: {len(samples)} samples ({sum(bool(s.images) for s in samples)} with an image, mean "
              f"{mean_tokens:.0f} tokens, {image_token_count(processor)} tokens/image), batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs, processor {'real' if shared else 'stand-in'}; samples/s")]
    lines.append(f"{'workers':<9}" + "".join(f"{arm:>12}" for arm in ("trl", "ours", "ours+cache")))
    for workers in args.workers.split(","):
        lines.append(f"{workers:<9}" + "".join(f"{results[f'{arm}/{workers}']:12.1f}"
                                               for arm in ("trl", "ours", "ours+cache")))
    for label, rate in gpu_need(args.gpu_json, mean_tokens):
        lines.append(f"GPU ({label}) consumes {rate:.1f} samples/s")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "mean_tokens": mean_tokens,
                                               "samples_per_s": results}, indent=2))


if __name__ == "__main__":
    main()
