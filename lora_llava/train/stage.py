"""The train stage: model + adapters, data, TRL's SFTTrainer with our collator, then the adapter folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lora_llava.data import load_splits, require_split
from lora_llava.data.collate import Collator
from lora_llava.data.image_cache import build_image_cache
from lora_llava.data.samples import with_suffix
from lora_llava.data.screen import screen_splits
from lora_llava.models.adapters import apply_adapters
from lora_llava.models.load import build_model_and_processor, load_processor, resolve_dtype
from lora_llava.plan import plan_before_training

log = logging.getLogger("lora_llava")


def index_dataset(pool, rows):
    """A `datasets.Dataset` of row indices into a pool of samples, which is what TRL's SFTTrainer accepts. Samples
    stay Python objects (decoded images included) and are looked up by the collator. The `images` column
    (the image count) tells TRL this is a vision dataset, so it skips its own text preprocessing."""
    from datasets import Dataset

    return Dataset.from_dict({"sample_index": list(rows), "images": [len(pool[i].images) for i in rows]})


def build_sft_config(train_cfg, run_dir: Path, dtype: torch.dtype, has_eval: bool):
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=train_cfg.epochs,
        max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.batch_size,
        per_device_eval_batch_size=train_cfg.batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        learning_rate=train_cfg.learning_rate,
        lr_scheduler_type=train_cfg.lr_scheduler_type,
        warmup_steps=train_cfg.warmup_steps,
        weight_decay=train_cfg.weight_decay,
        max_grad_norm=train_cfg.max_grad_norm,
        optim=train_cfg.optim,
        # Checkpointing is applied by apply_adapters (it must precede get_peft_model for k-bit models).
        activation_checkpointing=False,  # transformers 5's name; SFTConfig's old-named default would warn
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        use_cpu=not on_gpu,
        seed=train_cfg.seed,
        data_seed=train_cfg.seed,
        logging_steps=train_cfg.logging_steps,
        save_steps=train_cfg.save_steps,
        save_total_limit=train_cfg.save_total_limit,
        eval_strategy="steps" if has_eval and train_cfg.eval_steps else "no",
        eval_steps=train_cfg.eval_steps,
        report_to=list(train_cfg.report_to),
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,  # our collator checks lengths and never truncates
        dataloader_num_workers=0,
    )


def build_trainer(cfg, model, processor, splits, run_dir: Path, dtype: torch.dtype):
    from lora_llava.models.card import write_model_card
    from lora_llava.train.trainer import LlavaSFTTrainer

    eval_samples = splits.get(cfg.data.eval_split) if cfg.data.eval_split else None
    args = build_sft_config(cfg.train, run_dir, dtype, bool(eval_samples))
    # One collator serves train and eval batches, so both index into one pool: train rows first.
    train_samples, eval_samples = splits[cfg.data.train_split], eval_samples or []
    pool = train_samples + eval_samples
    collator = Collator(processor, image_cache=build_image_cache(cfg.data, processor.image_processor),
                        max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt,
                        image_root=cfg.data.image_root, samples=pool, with_ids=True)
    return LlavaSFTTrainer(
        model=model,
        args=args,
        train_dataset=index_dataset(pool, range(len(train_samples))),
        eval_dataset=index_dataset(pool, range(len(train_samples), len(pool))) if eval_samples else None,
        processing_class=processor,
        data_collator=collator,
        projector_learning_rate=cfg.train.projector_learning_rate,  # the optimizer is built by the trainer
        group_by_modality_length=cfg.train.group_by_modality_length,
        length_group_window=cfg.train.length_group_window,
        supervised_logits_only=cfg.train.supervised_logits_only,
        card_writer=lambda folder: write_model_card(folder, cfg),
    )


def prepare_splits(cfg, processor, run_dir: Path):
    """Load, cut to data.limit, add train.answer_suffix, then screen the train and eval splits."""
    splits = load_splits(cfg.data)
    require_split(splits, cfg.data.train_split, "data.train_split")
    if cfg.data.limit:
        splits[cfg.data.train_split] = splits[cfg.data.train_split][: cfg.data.limit]
    for name in (cfg.data.train_split, cfg.data.eval_split):
        if name in splits and cfg.train.answer_suffix:
            splits[name] = [with_suffix(s, cfg.train.answer_suffix) for s in splits[name]]
    # Bad samples stop the run here (data.on_error=raise) or are left out and listed (skip), never mid-training.
    return screen_splits(splits, cfg.data, processor, run_dir, [cfg.data.train_split, cfg.data.eval_split])



def train(cfg, run_dir: Path):
    """Train adapters per `cfg`; returns (peft model, processor). The adapter folder is written by export."""
    from transformers import set_seed

    from lora_llava.train.callbacks import check_trackers
    from lora_llava.train.fit import fit

    run_dir = Path(run_dir)
    check_trackers(cfg.train.report_to)  # before the model loads: a tracker only when named and installed
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    checkpointing = plan_before_training(cfg)  # printed before the model loads; decides checkpointing when unset
    # Data first, with the processor alone: a bad sample stops the run before any weights load.
    splits = prepare_splits(cfg, load_processor(cfg.model), run_dir)
    dtype = resolve_dtype(cfg.model.dtype)
    model, processor = build_model_and_processor(cfg.model, cfg.quant, dtype)
    # After loading (building the tiny model draws random numbers): train.seed alone fixes the adapters' init.
    set_seed(cfg.train.seed)
    model = apply_adapters(model, cfg.peft, cfg.quant.method != "none", checkpointing)
    trainer = build_trainer(cfg, model, processor, splits, run_dir, dtype)
    fit(trainer, cfg, run_dir)  # resume, preemption, logs, fail-fast (lora_llava/fit.py)
    return trainer.model, processor


def train_stage(cfg, ctx) -> None:
    from lora_llava.distributed import is_main_process
    from lora_llava.models.load import save_adapter

    ctx.model, ctx.processor = train(cfg, ctx.run_dir)
    if is_main_process():  # one adapter per run, however many processes trained it
        ctx.adapter_dir = save_adapter(ctx.model, ctx.processor, ctx.run_dir / "adapter", cfg)
        log.info("adapter saved to %s", ctx.adapter_dir)
