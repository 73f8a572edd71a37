"""LLaVA-1.5-7B on one CUDA GPU: peak memory and tokens/s, QLoRA (NF4) and bf16 LoRA, batch 1 and 8, with and
without gradient checkpointing, our trainer next to TRL's plain SFTTrainer on the same model and batches.

    python -m benchmarks.gpu --json gpu.json              # on the GPU (finishes within --deadline-s)
    python -m benchmarks.gpu --tiny --device cpu          # the same code end to end on a CPU, tiny shapes

The model is built at LLaVA-1.5-7B's exact shapes (benchmarks/shapes.py; 7,063,427,072 parameters) with random
weights directly on the GPU; no download, as speed and memory do not depend on the weight values. For QLoRA its
language-model linears are packed to NF4 (double quantization, bf16 compute) as from_pretrained with our
BitsAndBytesConfig would; the adapters then go on through lora_llava.models.adapters.apply_adapters, as in training
(LoRA r=16, alpha 32, dropout 0.05 on all seven linears of the language model; projector trained).
Rows are ScienceQA-like: 576 image tokens and text to --seq tokens, the last two (answer letter + EOS) supervised.
There is no tokenizer on the GPU machine, so both trainers get the same pre-built batches: this compares what
happens on the GPU (the loss head, the trainer loop); the data path is measured on CPU by benchmarks/data.py.
Peak memory is torch.cuda.max_memory_allocated (and _reserved) per run, next to the planner's estimate.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from types import SimpleNamespace as NS

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SKIP = ["vision_tower", "multi_modal_projector", "lm_head"]


def settings(quant: str, args):
    """Plain namespaces shaped like the config groups (no Hydra on the GPU machine)."""
    peft = NS(method="lora", r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
              scope="language_model", use_dora=False, use_rslora=False, bias="none", train_projector=True)
    quant_cfg = NS(method=quant, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                   bnb_4bit_compute_dtype="auto", skip_modules=SKIP)
    plan = NS(model=NS(dtype="bfloat16" if args.device == "cuda" else "float32"), quant=quant_cfg, peft=peft,
              train=NS(optim="adamw_torch", supervised_logits_only=True),
              plan=NS(answer_tokens=2, cuda_overhead_gb=0.0))
    return peft, quant_cfg, plan


def model_config(args):
    from benchmarks.shapes import llava_15_7b_config, small_llava_config

    if args.tiny:
        return small_llava_config(vocab_size=512, image_token_index=500, pad_token_id=501, hidden=128, layers=2)
    return llava_15_7b_config()


def quantize_nf4(model, dtype, device):
    """Swap every language-model Linear (all but SKIP) for a bitsandbytes Linear4bit holding its weight in NF4."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    for name, module in list(model.named_modules()):
        if type(module) is not torch.nn.Linear or any(part in name.split(".") for part in SKIP):
            continue
        packed = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                   compute_dtype=dtype, compress_statistics=True, quant_type="nf4",
                                   quant_storage=torch.uint8, device="meta")
        packed.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False, compress_statistics=True,
                                          quant_type="nf4", quant_storage=torch.uint8, module=packed).to(device)
        if module.bias is not None:
            packed.bias = module.bias
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, packed)
    # What transformers' bitsandbytes loader marks, so peft prepares the model as a k-bit one.
    model.is_loaded_in_4bit = True
    model.config.quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=True,
                                                          bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=SKIP)
    return model


def build_model(args, quant: str, checkpointing: bool):
    from transformers import LlavaForConditionalGeneration

    from lora_llava.models.adapters import apply_adapters

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight into the compute dtype, on the device
    try:
        with torch.device(args.device):
            model = LlavaForConditionalGeneration(model_config(args))
    finally:
        torch.set_default_dtype(previous)
    if quant == "nf4":
        model = quantize_nf4(model, dtype, args.device)
    peft, _, _ = settings(quant, args)
    torch.manual_seed(0)
    return apply_adapters(model, peft, quant != "none", checkpointing)


def make_rows(config, n: int, seq: int, seed: int = 0) -> list[dict]:
    """`n` rows of `seq` tokens: BOS, the image tokens, random text, the answer and EOS (the two labels)."""
    gen = torch.Generator().manual_seed(seed)
    image_tokens, vocab = config.image_seq_length, config.text_config.vocab_size
    size = config.vision_config.image_size
    rows = []
    for _ in range(n):
        text = torch.randint(3, config.image_token_index, (seq - image_tokens - 1,), generator=gen)
        ids = torch.cat([torch.tensor([1]), torch.full((image_tokens,), config.image_token_index), text])
        ids[-1] = 2  # EOS
        labels = torch.full_like(ids, -100)
        labels[-2:] = ids[-2:]
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                     "pixel_values": torch.randn(3, size, size, generator=gen)})
    del vocab
    return rows


class RowCollator:
    """Batches by row index: the pre-built tensors stacked, nothing else done on the way."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __call__(self, items: list[dict]) -> dict:
        picked = [self.rows[item["row"]] for item in items]
        return {key: torch.stack([r[key] for r in picked]) for key in picked[0]}


def build_trainer(arm: str, model, rows, batch: int, args, workdir: str):
    from trl import SFTConfig, SFTTrainer

    from lora_llava.models.tiny import VICUNA, tiny_tokenizer
    from lora_llava.train.trainer import LlavaSFTTrainer

    on_gpu = args.device == "cuda"
    sft = SFTConfig(output_dir=workdir, max_steps=args.warmup + args.steps, per_device_train_batch_size=batch,
                    learning_rate=2e-4, lr_scheduler_type="constant", use_cpu=not on_gpu,
                    bf16=True,  # autocast, also on CPU: TRL casts QLoRA adapters to bf16
                    gradient_checkpointing=False,  # set on the model by apply_adapters, as in training
                    logging_steps=10_000, save_strategy="no", report_to=[], remove_unused_columns=False,
                    dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, dataloader_num_workers=0,
                    seed=0, optim="adamw_torch")
    from datasets import Dataset

    common = {"model": model, "args": sft, "train_dataset": Dataset.from_dict({"row": list(range(len(rows)))}),
              "data_collator": RowCollator(rows),
              "processing_class": tiny_tokenizer(VICUNA)}  # any tokenizer: the batches arrive tokenized
    if arm == "trl":
        return SFTTrainer(**common)
    return LlavaSFTTrainer(**common, group_by_modality_length=False, supervised_logits_only=True)


def measure(arm, model, rows, batch, args) -> dict:
    import tempfile

    from benchmarks.timing import instrument, summarize

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build_trainer(arm, model, rows, batch, args, workdir)
        log = instrument(trainer, sync)
        try:
            trainer.train()
            result = summarize(log, args.warmup)
        except torch.OutOfMemoryError:
            result = {"oom": True}
        finally:
            del trainer
            gc.collect()
    if args.device == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024**3
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 1024**3
        torch.cuda.empty_cache()
    return result


def planned_gib(args, quant: str, batch: int, checkpointing: bool) -> float:
    from lora_llava.plan import count_parameters, estimate_gb

    _, quant_cfg, plan_cfg = settings(quant, args)
    counts = count_parameters(model_config(args), quant_cfg, plan_cfg.peft)
    return sum(estimate_gb(counts, plan_cfg, batch, args.seq, checkpointing).values())


def device_line(args) -> str:
    import transformers

    if args.device != "cuda":
        return f"cpu, torch {torch.__version__}, transformers {transformers.__version__}"
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 1024**3:.0f} GiB, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def table(results: list[dict]) -> str:
    lines = [(f"{'quant':<6}{'ckpt':<6}{'batch':>5}  {'arm':<5}{'tokens/s':>10}{'step s':>8}"
              f"{'peak GiB':>10}{'reserved':>10}{'planned':>9}")]
    for r in results:
        speed = "OOM" if r.get("oom") else f"{r['tokens_per_s']:10.0f}{r['median_step_s']:8.3f}"
        lines.append(f"{r['quant']:<6}{'on' if r['checkpointing'] else 'off':<6}{r['batch']:>5}  {r['arm']:<5}"
                     f"{speed:>18}{r.get('peak_allocated_gib', 0):10.2f}{r.get('peak_reserved_gib', 0):10.2f}"
                     f"{r['planned_gib']:9.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small shapes, for a CPU dry run")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quants", default="nf4,none")
    parser.add_argument("--deadline-s", type=float, default=420, help="skip the runs left after this long")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    start, results = time.time(), []
    batches = [int(b) for b in args.batches.split(",")]
    rows = make_rows(model_config(args), max(batches) * (args.warmup + args.steps), args.seq)
    print(device_line(args), flush=True)
    for quant in args.quants.split(","):
        for checkpointing in (True, False):
            if time.time() - start > args.deadline_s:
                print(f"deadline reached: skipping {quant} checkpointing={checkpointing}", flush=True)
                continue
            built = time.time()
            model = build_model(args, quant, checkpointing)
            print(f"built {quant} (checkpointing {checkpointing}) in {time.time() - built:.0f} s", flush=True)
            for batch in batches:
                for arm in ("ours", "trl"):
                    if time.time() - start > args.deadline_s:
                        continue
                    result = measure(arm, model, rows, batch, args)
                    result.update(quant=quant, checkpointing=checkpointing, batch=batch, arm=arm,
                                  planned_gib=planned_gib(args, quant, batch, checkpointing))
                    results.append(result)
                    print(table([result]).splitlines()[1], flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump({"device": device_line(args), "args": vars(args), "results": results}, f,
                                      indent=2)
            del model
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    print(table(results))
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
