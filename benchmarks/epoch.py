"""One epoch-equivalent of ScienceQA's real length mix under a GPU memory cap: lora_llava with its defaults against
the plain TRL script a user writes from TRL's own VLM example, on the same model, rows and cap.

    python -m benchmarks.epoch                          # CPU: the matched-FLOP model, 5 interleaved rounds
    python -m benchmarks.epoch --write-lengths mix.json # the length mix as numbers, for a machine without ../shared
    python -m benchmarks.epoch --gpu --lengths mix.json # a GPU: LLaVA-1.5-7B's exact shapes, bf16
    python -m benchmarks.epoch --dry-run                # the GPU path on CPU (7B widths, one decoder layer, 2 rows)
    python -m benchmarks.epoch --ablations              # also our arm with one lever off at a time
    python -m benchmarks.epoch --profile trl            # where one arm's CPU time goes, by kind of op

The mix: every ScienceQA test question (../shared/data/scienceqa/llava_test_CQM-A.json), tokenized with the real
LLaVA-1.5 processor, 576 tokens per image (48% of the rows). `--rows N` rows are taken at evenly spaced quantiles of
the lengths, so they keep the mix's distribution; each becomes a question of exactly that many tokens (filler words)
with a one-letter answer, and image rows get a real ScienceQA image (cycled). The epoch-equivalent time is the
measured time x (questions in the mix / N).

Arms (same random model and seed, same LoRA: r=16 on the language model's seven linears, projector trained):
  trl   TRL's examples/scripts/sft_vlm.py settings: SFTConfig defaults (gradient checkpointing on, per-device batch 8,
        random batches), its documented --gradient_accumulation_steps 8, TRL's own vision collator on
        prompt/completion rows (answer-only loss, as ours).
  ours  lora_llava's trainer and collator with their defaults at the same micro-batch and accumulation:
        modality-grouped batches, logits only at answer positions, the pixel cache (cold: a first epoch), and
        gradient checkpointing as the memory planner decides for LLaVA-1.5-7B under --gpu-memory-gb.
The memory cap acts through the planner at 7B shapes (lora_llava.plan): it checks that the TRL settings fit and picks
our checkpointing. On CPU the model is benchmarks/matched.py's (FLOP split of LLaVA-1.5-7B, printed), in fp32 for
both arms; its small vocabulary means token ids are folded into it (the same fold in both arms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARMS = ("trl", "ours")
# --ablations: our arm with one lever off at a time, to say what each is worth (same rounds, interleaved).
ABLATIONS = {"ours, random batches": ["train.group_by_modality_length=false"],
             "ours, full logits": ["train.supervised_logits_only=false"]}
TRL_BATCH, TRL_ACCUMULATION = 8, 8  # SFTConfig's per-device default; the example's --gradient_accumulation_steps


class Counted:
    """Wraps a collator: folds token ids into a small vocabulary (the matched model's) and counts real and padded
    positions. Everything else is the wrapped collator's (our sampler reads its samples and tokenizer)."""

    def __init__(self, collator, vocab: int, image_id: int, image_target: int):
        self.collator, self.vocab, self.image_id, self.image_target = collator, vocab, image_id, image_target
        self.tokens = self.positions = 0

    def __call__(self, items):
        batch = self.collator(items)
        mask = batch["attention_mask"]
        self.tokens += int(mask.sum())
        self.positions += mask.numel()
        # Identity for the real tokenizer on the 7B vocabulary; the matched model's image token is its last id.
        ids, labels = batch["input_ids"], batch["labels"]
        folded = ids % (self.vocab - 2)
        folded[ids == self.image_id] = self.image_target
        batch["input_ids"] = folded
        batch["labels"] = labels.where(labels == -100, labels % (self.vocab - 2))
        return batch

    def __getattr__(self, name):
        return getattr(self.__dict__["collator"], name)


def memory_plans(config_7b, longest: int, cap: float, batch: int = TRL_BATCH) -> dict:
    """Planner estimates (GiB) at LLaVA-1.5-7B, bf16 LoRA, `batch` rows of the longest length: the TRL settings
    (checkpointing, TRL's head) and ours with and without checkpointing; ours checkpoints only when needed."""
    from benchmarks.gpu import settings
    from lora_llava.plan import count_parameters, estimate_gb

    peft, quant, plan = settings("none", NS(device="cuda"))
    plan.plan.cuda_overhead_gb = 1.0  # the planner's default
    counts = count_parameters(config_7b, quant, peft)

    def total(checkpointing: bool, answer_logits: bool) -> float:
        plan.train.supervised_logits_only = answer_logits
        return round(sum(estimate_gb(counts, plan, batch, longest, checkpointing).values()), 2)

    plans = {"cap_gb": cap, "seq": longest, "trl (checkpointing)": total(True, False),
             "ours without checkpointing": total(False, True), "ours with checkpointing": total(True, True)}
    plans["ours checkpointing"] = plans["ours without checkpointing"] > cap
    if plans["trl (checkpointing)"] > cap:
        raise SystemExit(f"the TRL example's settings need {plans['trl (checkpointing)']} GiB > --gpu-memory-gb "
                         f"{cap}: nothing to compare at this cap")
    return plans


def random_model(config, dtype, device):
    """A randomly initialised LLaVA of `config`, built straight into `dtype` on `device`."""
    import copy

    import torch
    from transformers import LlavaForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # a copy: TRL writes the tokenizer's pad id into the model's config
            return LlavaForConditionalGeneration(copy.deepcopy(config))
    finally:
        torch.set_default_dtype(previous)


def build_arm(arm: str, args, ctx):
    import torch

    from lora_llava.models.adapters import apply_adapters

    torch.manual_seed(args.seed)
    model = random_model(ctx.config, ctx.dtype, ctx.device)
    checkpointing = arm != "trl" and ctx.plans["ours checkpointing"]
    model = apply_adapters(model, ctx.peft, False, checkpointing)  # TRL's arm: its SFTConfig turns it on
    slug = "".join(c if c.isalnum() else "-" for c in arm)  # a Hydra override value: no commas or spaces
    scratch = Path(tempfile.mkdtemp(prefix=f"epoch-{slug}-", dir=ctx.scratch))
    trainer = trl_trainer(model, args, ctx, scratch) if arm == "trl" else our_trainer(model, args, ctx, scratch, arm)
    trainer.data_collator = Counted(trainer.data_collator, ctx.fold, ctx.processor_image_id, ctx.image_target)
    return trainer


def trl_trainer(model, args, ctx, scratch: Path):
    import torch
    from trl import SFTConfig, SFTTrainer

    from benchmarks.workload import trl_dataset

    on_gpu = ctx.device == "cuda"
    sft = SFTConfig(output_dir=str(scratch), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
                    gradient_accumulation_steps=args.accumulation, bf16=on_gpu and ctx.dtype == torch.bfloat16,
                    use_cpu=not on_gpu, max_length=None, save_strategy="no", report_to=[], seed=args.seed)
    return SFTTrainer(model=model, args=sft, train_dataset=trl_dataset(ctx.samples), processing_class=ctx.processor)


def our_trainer(model, args, ctx, scratch: Path, arm: str = "ours"):
    from lora_llava.config import compose
    from lora_llava.train.stage import build_trainer

    cfg = compose("smoke", [
        "train=default", "data.max_length=4096", f"data.image_cache_dir={scratch / 'pixels'}", "train.report_to=[]",
        f"train.batch_size={args.batch_size}", f"train.gradient_accumulation_steps={args.accumulation}",
        "train.epochs=1", "train.save_steps=1000000", f"train.seed={args.seed}",
        f"train.gradient_checkpointing={ctx.plans['ours checkpointing']}", *ABLATIONS.get(arm, [])])
    return build_trainer(cfg, model, ctx.processor, {"train": ctx.samples}, scratch, ctx.dtype)


def run_arm(arm: str, args, ctx) -> dict:
    import gc

    import torch

    trainer = build_arm(arm, args, ctx)
    sync = torch.cuda.synchronize if ctx.device == "cuda" else (lambda: None)
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    sync()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    counted = trainer.data_collator
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": counted.tokens, "positions": counted.positions,
              "padding": 1 - counted.tokens / counted.positions, "steps": trainer.state.global_step}
    del trainer
    gc.collect()
    return result


# aten ops by kind, for --profile: where an arm's CPU time goes (an op's backward counts as the op).
MATMUL = {"mm", "addmm", "bmm", "linear", "matmul"}
ELEMENTWISE = {"mul", "add", "bernoulli", "silu", "gelu", "div", "sub", "pow", "rsqrt", "mean", "neg", "cat",
               "copy", "to", "_to_copy", "fill", "masked_fill", "where", "sum", "exp", "log", "softmax",
               "_softmax", "nll_loss", "embedding", "index", "clone", "zero", "layer_norm", "native_layer_norm",
               "sigmoid", "cos", "sin", "threshold", "native_dropout", "dropout"}


def kind_of(name: str) -> str:
    op = name.removeprefix("aten::")
    if any(k in op for k in ("scaled_dot_product", "flash_attention", "efficient_attention")):
        return "attention"
    base = op.removesuffix("_backward").rstrip("_")
    return "matmul" if base in MATMUL else "elementwise" if base in ELEMENTWISE else "other"


def profile_arm(arm: str, args, ctx) -> str:
    """One pass of `arm` under torch.profiler: self CPU time by kind of op (matmuls, attention, elementwise)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    trainer = build_arm(arm, args, ctx)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    by_kind = Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            by_kind[kind_of(event.key)] += event.self_cpu_time_total
    total = sum(by_kind.values())
    return "\n".join([f"{arm}: self CPU time of aten ops by kind ({total / 1e6:.2f} s in all)"] +
                     [f"  {kind:<12}{t / total:7.1%}" for kind, t in by_kind.most_common()])


def model_for(args, config_7b, mix):
    """(config, device, dtype): the matched-FLOP model on CPU; LLaVA-1.5-7B's shapes with --gpu (one decoder layer
    and fp32 on CPU with --dry-run)."""
    import copy

    import torch

    from benchmarks.matched import Shape, llava_config, matched_shape, mix_stats

    if not args.gpu:
        shape = matched_shape(Shape.of(config_7b), mix_stats(mix), args.hidden, args.layers, args.mlp_ratio)
        return llava_config(shape, shape.vocab - 1, shape.vocab - 2), "cpu", torch.float32
    config = copy.deepcopy(config_7b)
    device, dtype = ("cpu", torch.float32) if args.dry_run else ("cuda", torch.bfloat16)
    if args.dry_run:  # every width exact, depth cut: one decoder layer, two CLIP layers (feature layer -2)
        config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers = 1, 2
    # transformers 5 builds each part in its sub-config's dtype when one is set, and the shared config.json says
    # float16 for the language model: without this the decoder ran in fp16 (on a CPU, a slow fallback matmul;
    # the dry run never finished) while the rest ran in the compute dtype.
    for part in (config, config.text_config, config.vision_config):
        part.dtype = dtype
    return config, device, dtype


def setup(args) -> NS:
    from benchmarks.gpu import settings
    from benchmarks.matched import Shape, mix_stats, split, split_table
    from benchmarks.mix import image_files, load_mix, pick, synthesize
    from benchmarks.shapes import llava_15_7b_config
    from benchmarks.workload import load_processor, shared_dir

    args.shared = shared_dir(args.shared)
    processor = load_processor(args.shared)
    mix = load_mix(args, processor)
    if args.write_lengths:  # written, and nothing else: the file is for another machine
        from benchmarks.mix import describe_mix

        Path(args.write_lengths).write_text(json.dumps(mix))
        print(f"wrote {args.write_lengths}: {describe_mix(mix)}")
        raise SystemExit(0)
    if args.shared is not None:
        from transformers import LlavaConfig

        config_7b, source = LlavaConfig.from_pretrained(args.shared / "llava-1.5-7b-hf"), "the shared config.json"
    else:
        config_7b, source = llava_15_7b_config(), "benchmarks/shapes.py"
    config, device, dtype = model_for(args, config_7b, mix)
    rows = pick(mix, args.rows)
    scratch = Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    samples, error = synthesize(rows, processor, image_files(args.shared, scratch / "images"))
    stats = mix_stats(mix)
    splits = {"LLaVA-1.5-7B": split(Shape.of(config_7b), stats), "this run": split(Shape.of(config), stats)}
    tok = processor.tokenizer
    return NS(processor=processor, mix=mix, rows=rows, samples=samples, length_error=error, config=config,
              device=device, dtype=dtype, scratch=scratch, peft=settings("none", NS(device=device))[0],
              plans=memory_plans(config_7b, max(n for n, _ in mix), args.gpu_memory_gb, args.batch_size),
              fold=config.text_config.vocab_size, processor_image_id=tok.convert_tokens_to_ids(processor.image_token),
              image_target=config.image_token_index, config_source=source, split_table=split_table(splits),
              shape=Shape.of(config), splits=splits)


def header(args, ctx) -> str:
    from benchmarks.mix import describe_mix

    p = ctx.plans
    return "\n".join([
        f"mix: {describe_mix(ctx.mix)} ({'--lengths' if args.lengths else 'ScienceQA test, real processor'})",
        f"run: {describe_mix(ctx.rows)}; synthesized lengths within {ctx.length_error} token(s)",
        (f"model: {ctx.shape} on {ctx.device} ({str(ctx.dtype).replace('torch.', '')}); 7B shapes from "
        f"{ctx.config_source}"),
        ctx.split_table,
        (f"memory plan at LLaVA-1.5-7B, bf16 LoRA, micro-batch {args.batch_size} x {p['seq']} tokens, cap "
        f"{p['cap_gb']} GiB: TRL settings {p['trl (checkpointing)']} GiB; ours {p['ours without checkpointing']} "
        f"GiB without checkpointing, {p['ours with checkpointing']} with -> checkpointing "
        f"{'on' if p['ours checkpointing'] else 'off'}"),
        f"both arms: micro-batch {args.batch_size}, accumulation {args.accumulation}, one pass over the rows",
    ])


def summary(results: dict, ctx) -> str:
    scale = len(ctx.mix) / len(ctx.rows)
    width = max(len(arm) for arm in results) + 2
    lines = [(f"{'arm':<{width}}{'median s':>10}{'epoch-equivalent s':>20}{'real tokens':>13}{'positions':>11}"
             f"{'padding':>9}")]
    for arm, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        lines.append(f"{arm:<{width}}{seconds:10.1f}{seconds * scale:20.0f}{runs[0]['tokens']:13d}"
                     f"{runs[0]['positions']:11d}{runs[0]['padding']:9.1%}")
    for arm in (a for a in results if a != "trl"):
        ratios = [o["seconds"] / t["seconds"] for t, o in zip(results["trl"], results[arm])]
        cpu_ratios = [o["cpu_seconds"] / t["cpu_seconds"] for t, o in zip(results["trl"], results[arm])]
        name = "ours/TRL" if arm == "ours" else f"({arm})/TRL"
        lines.append(f"{name}: median {statistics.median(ratios):.3f} over {len(ratios)} interleaved rounds "
                     f"(per round: {', '.join(f'{r:.3f}' for r in ratios)})")
        lines.append(f"{name} in process CPU time (insensitive to other load on a shared machine): median "
                     f"{statistics.median(cpu_ratios):.3f} (per round: {', '.join(f'{r:.3f}' for r in cpu_ratios)})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=32, help="rows of the mix to train on (quantile-spaced)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpu-memory-gb", type=float, default=24.0)
    parser.add_argument("--batch-size", type=int, default=TRL_BATCH)
    parser.add_argument("--accumulation", type=int, default=TRL_ACCUMULATION)
    parser.add_argument("--hidden", type=int, default=128, help="matched model: decoder width")
    parser.add_argument("--layers", type=int, default=1, help="matched model: decoder layers")
    parser.add_argument("--mlp-ratio", type=int, default=32, help="matched model: MLP width / hidden")
    parser.add_argument("--gpu", action="store_true", help="LLaVA-1.5-7B's exact shapes, bf16, on CUDA")
    parser.add_argument("--dry-run", action="store_true", help="the --gpu path on CPU: 7B widths, one decoder layer, 2 rows")
    parser.add_argument("--lengths", default=None, help="a --write-lengths file instead of ../shared")
    parser.add_argument("--write-lengths", default=None)
    parser.add_argument("--shared", default=None, help="../shared/data (default: beside the checkout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", choices=ARMS, default=None,
                        help="instead of timing, one pass of this arm under torch.profiler: CPU time by kind of op")
    parser.add_argument("--ablations", action="store_true",
                        help=f"also run our arm with one lever off at a time: {', '.join(ABLATIONS)}")
    args = parser.parse_args(argv)
    if args.dry_run:  # the GPU path end to end, small enough for a CPU
        args.gpu, args.rows, args.rounds, args.batch_size, args.accumulation = True, 2, 1, 2, 1
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    ctx = setup(args)
    print(header(args, ctx), flush=True)
    if ctx.device == "cuda":  # the cap, enforced: an arm that needs more fails with an out-of-memory error
        import torch

        total = torch.cuda.get_device_properties(0).total_memory / 1024**3
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.gpu_memory_gb / total))
    if args.profile:
        print(profile_arm(args.profile, args, ctx))
        return
    arms = ARMS + (tuple(ABLATIONS) if args.ablations else ())
    results = {arm: [] for arm in arms}
    for round_ in range(args.rounds):
        for arm in arms if round_ % 2 == 0 else arms[::-1]:  # interleaved, the order alternating
            results[arm].append(run_arm(arm, args, ctx))
        trl, ours = results["trl"][-1], results["ours"][-1]
        print(f"round {round_ + 1}: trl {trl['seconds']:.1f} s, ours {ours['seconds']:.1f} s, ours/TRL "
              f"{ours['seconds'] / trl['seconds']:.3f} (process CPU time: trl {trl['cpu_seconds']:.1f} s, ours "
              f"{ours['cpu_seconds']:.1f} s, ours/TRL {ours['cpu_seconds'] / trl['cpu_seconds']:.3f})", flush=True)
    text = summary(results, ctx)
    print(text)
    if args.json:
        from benchmarks.mix import describe_mix

        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                               "plans": ctx.plans, "splits": ctx.splits, "results": results,
                                               "mix": describe_mix(ctx.mix), "rows": describe_mix(ctx.rows)},
                                              indent=2))


if __name__ == "__main__":
    main()
