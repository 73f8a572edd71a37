"""Training speed: our trainer against the plain TRL path, on the same model, data, batch size, seeds and steps.

    python -m benchmarks.train [--pairs 5] [--steps 8] [--batch-size 4] [--json out.json]

Three arms, run as interleaved rounds (the arm order rotates each round, so drift and warm-up hit every arm):
  trl          TRL's SFTTrainer given the processor; its own DataCollatorForVisionLanguageModeling builds the
               batches from conversational prompt/completion rows (answer-only loss, as ours), images decoded
               by `datasets` on access, as in TRL's sft_vlm.py.
  ours-plain   lora_llava's trainer and collator with the speed levers off (random batches, TRL's log-prob head).
  ours         the defaults: modality/length-grouped batches, logits only at answer positions, pixel cache warm
               (as from the second epoch on).
Every arm starts from the same random LLaVA (same seed) with the same LoRA adapters (r=16 on the language model,
projector trained). Reported: median step time over the steps after warm-up, the ratio to TRL per round (median
over rounds), tokens and padding per step, and the share of step time outside forward/backward/optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARMS = ("trl", "ours-plain", "ours")


def bench_config(args, scratch: Path, arm: str):
    from lora_llava.config import compose

    levers = arm == "ours"
    return compose("smoke", [
        "train.report_to=[]", f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}",
        "train.gradient_accumulation_steps=1", "train.learning_rate=2e-4", "train.projector_learning_rate=2e-5",
        f"train.logging_steps={args.steps}", "train.save_steps=100000", f"train.seed={args.seed}",
        "train.gradient_checkpointing=false", "peft.r=16", "peft.lora_alpha=32", "peft.lora_dropout=0.05",
        f"train.group_by_modality_length={levers}", f"train.supervised_logits_only={levers}",
        f"data.image_cache={levers}", f"data.image_cache_dir={scratch / 'pixels'}", "data.max_length=4096",
    ])


def build_arm(arm: str, args, processor, samples, scratch: Path):
    import torch
    from trl import SFTTrainer

    from benchmarks.workload import random_llava, trl_dataset
    from lora_llava.models.adapters import apply_adapters
    from lora_llava.train.stage import build_sft_config, build_trainer

    cfg = bench_config(args, scratch, arm)
    model = random_llava(processor, args.seed, args.hidden, args.layers)
    torch.manual_seed(args.seed)  # the same LoRA init in every arm
    model = apply_adapters(model, cfg.peft, False, False)
    if arm != "trl":
        return build_trainer(cfg, model, processor, {"train": samples}, scratch / arm, torch.float32)
    sft_args = build_sft_config(cfg.train, scratch / arm, torch.float32, False)
    sft_args.dataset_kwargs = None  # TRL decides for itself (vision rows skip its text preparation)
    return SFTTrainer(model=model, args=sft_args, train_dataset=trl_dataset(samples), processing_class=processor)


def run_arm(arm, args, processor, samples, scratch):
    import torch

    from benchmarks.timing import instrument, summarize

    torch.manual_seed(args.seed)
    trainer = build_arm(arm, args, processor, samples, scratch)
    log = instrument(trainer)
    trainer.train()
    return summarize(log, args.warmup)


def padding_table(processor, samples, batch_sizes=(4, 8, 16), seed=0) -> dict:
    """Padding fraction over the whole length mix, random batches vs grouped batches (no model needed)."""
    import torch

    from lora_llava.data.collate import Collator
    from lora_llava.train.sampling import grouped_batches, padding_fraction, random_batches, sample_lengths

    lengths = sample_lengths(samples, Collator(processor))
    has_image = [bool(s.images) for s in samples]
    table = {}
    for bs in batch_sizes:
        gen = torch.Generator().manual_seed(seed)
        table[bs] = {"random": padding_fraction(lengths, random_batches(len(lengths), bs, gen)),
                     "grouped": padding_fraction(lengths, grouped_batches(lengths, has_image, bs, gen))}
    return {"n": len(lengths), "image_share": sum(has_image) / len(has_image),
            "mean_length": statistics.mean(lengths), "by_batch_size": table}


def all_questions(shared):
    """Every test question (lengths only need text; image rows count their 576 tokens even without the file)."""
    from benchmarks.workload import _from_llava_row

    rows = json.loads((shared / "scienceqa" / "llava_test_CQM-A.json").read_text())
    samples = [_from_llava_row(r, shared / "scienceqa" / "images" / "test") for r in rows]
    return samples


def warm_cache(processor, samples, scratch):
    from lora_llava.data.image_cache import PixelCache

    cache = PixelCache(processor.image_processor, scratch / "pixels")
    cache.pixel_values([(s.id, ref) for s in samples for ref in s.images])


def report(results: dict, padding: dict, args, machine: str) -> str:
    lines = [(f"train benchmark on {machine}: batch {args.batch_size}, {args.steps} steps/run "
              f"({args.warmup} warm-up), {args.pairs} interleaved rounds, model hidden {args.hidden} x "
              f"{args.layers} layers, vocab {results['vocab']}, {results['image_tokens']} image tokens/image, "
              f"processor: {results['processor']}")]
    lines.append(f"{'arm':<12}{'step s':>9}{'ratio/TRL':>11}{'tokens/step':>13}{'padding':>9}{'outside':>9}")
    for arm in ARMS:
        runs = results["runs"][arm]
        ratio = statistics.median(r["median_step_s"] / t["median_step_s"]
                                  for r, t in zip(runs, results["runs"]["trl"]))
        lines.append(f"{arm:<12}{statistics.median(r['median_step_s'] for r in runs):9.3f}{ratio:11.3f}"
                     f"{statistics.mean(r['tokens_per_step'] for r in runs):13.0f}"
                     f"{statistics.mean(r['padding_fraction'] for r in runs):9.1%}"
                     f"{statistics.median(r['outside_share'] for r in runs):9.1%}")
    lines.append(f"padding over {padding['n']} questions ({padding['image_share']:.0%} with an image, "
                 f"mean {padding['mean_length']:.0f} tokens), random vs grouped batches:")
    for bs, row in padding["by_batch_size"].items():
        lines.append(f"  batch {bs:>2}: {row['random']:.1%} -> {row['grouped']:.1%}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=None, help="../shared/data (default: beside the checkout)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import platform

    import torch
    from transformers.utils import logging as hf_logging

    from benchmarks.workload import load_processor, scienceqa_samples, shared_dir
    from lora_llava.data.collate import image_token_count

    hf_logging.set_verbosity_error()
    shared = shared_dir(args.shared)
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    processor = load_processor(shared)
    samples = scienceqa_samples(shared, args.samples, args.seed, scratch / "images")
    padding = padding_table(processor, all_questions(shared) if shared else samples)
    warm_cache(processor, samples, scratch)
    results = {"runs": {arm: [] for arm in ARMS}, "vocab": len(processor.tokenizer),
               "image_tokens": image_token_count(processor),
               "processor": "llava-1.5-7b-hf (real)" if shared else "stand-in (no ../shared/data)"}
    for round_ in range(args.pairs):
        order = ARMS[round_ % 3:] + ARMS[:round_ % 3]
        for arm in order:
            summary = run_arm(arm, args, processor, samples, scratch)
            results["runs"][arm].append(summary)
            print(f"round {round_ + 1} {arm:<11} step {summary['median_step_s']:.3f} s", flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = report(results, padding, args, machine)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine, "padding": padding,
                                               **results}, indent=2))


if __name__ == "__main__":
    main()
