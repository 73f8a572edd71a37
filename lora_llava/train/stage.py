"""The train stage: model + adapters, data, TRL's SFTTrainer with our collator, then the adapter folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from lora_llava.data import training_splits
from lora_llava.data.collate import Collator
from lora_llava.data.image_cache import build_image_cache
from lora_llava.data.screen import screen_splits
from lora_llava.models.adapters import apply_adapters, compile_language_model
from lora_llava.models.load import build_model_and_processor, load_processor, resolve_dtype
from lora_llava.models.projector import base_identity
from lora_llava.plan import plan_before_training

log = logging.getLogger("lora_llava")


def index_dataset(pool, rows):
    """A `datasets.Dataset` of row indices into a pool of samples, which is what TRL's SFTTrainer accepts. Samples
    stay Python objects (decoded images included) and are looked up by the collator. The `images` column
    (the image count) tells TRL this is a vision dataset, so it skips its own text preprocessing."""
    from datasets import Dataset

    return Dataset.from_dict({"sample_index": list(rows), "images": [len(pool[i].images) for i in rows]})


def build_sft_config(train_cfg, run_dir: Path, dtype: torch.dtype, has_eval: bool, num_workers: int = 0):
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    workers = num_workers > 0
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
        # data.num_workers processes collate (decode, preprocess, tokenize) ahead of the GPU; kept across epochs
        # (no restart cost per epoch), each with two batches in flight, into pinned memory on a GPU.
        dataloader_num_workers=num_workers,
        dataloader_persistent_workers=workers,
        dataloader_prefetch_factor=2 if workers else None,
        dataloader_pin_memory=on_gpu,
        # Its per-step isnan/isinf test would read the loss back every step; ours stops the run instead
        # (LlavaSFTTrainer.divergence, read back at logging steps).
        logging_nan_inf_filter=False,
        # Liger's Triton kernels for the norms, SwiGLU and RoPE; its fused loss is left off: our answer-only logits
        # (train.supervised_logits_only) already skip the vocabulary projection of unsupervised positions.
        use_liger_kernel=train_cfg.use_liger_kernel,
        liger_kernel_config={"rms_norm": True, "swiglu": True, "rope": True, "cross_entropy": False,
                             "fused_linear_cross_entropy": False} if train_cfg.use_liger_kernel else None,
    )


def build_trainer(cfg, model, processor, splits, run_dir: Path, dtype: torch.dtype):
    from lora_llava.models.card import write_model_card
    from lora_llava.train.resume import training_config
    from lora_llava.train.trainer import LlavaSFTTrainer

    eval_samples = splits.get(cfg.data.eval_split) if cfg.data.eval_split else None
    args = build_sft_config(cfg.train, run_dir, dtype, bool(eval_samples), cfg.data.num_workers)
    # One collator serves train and eval batches, so both index into one pool: train rows first.
    train_samples, eval_samples = splits[cfg.data.train_split], eval_samples or []
    pool = train_samples + eval_samples
    collator = Collator(processor, image_cache=build_image_cache(cfg.data, processor.image_processor),
                        max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt,
                        image_root=cfg.data.image_root, samples=pool, with_ids=True,
                        with_answer_positions=cfg.train.supervised_logits_only,
                        padding_free=cfg.train.padding_free)
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
        run_config=training_config(cfg),  # saved in each checkpoint; a resume compares against it
        not_learning_steps=cfg.train.not_learning_steps,
        projector_base=base_identity(cfg.model) if cfg.peft.method == "none" else None,
        card_writer=lambda folder: write_model_card(folder, cfg),
    )


def prepare_splits(cfg, processor, run_dir: Path, loaded=None):
    """Load (or take the `loaded` splits of this run), cut to data.limit, add train.answer_suffix, then screen the
    train and eval splits: ({split: samples}, the training rows' Lengths from screening, for the planner)."""
    splits = training_splits(cfg.data, cfg.train.answer_suffix, loaded)
    # Bad samples stop the run here (data.on_error=raise) or are left out and listed (skip), never mid-training.
    splits, lengths = screen_splits(splits, cfg.data, processor, run_dir,
                                    [cfg.data.train_split, cfg.data.eval_split])
    return splits, lengths[cfg.data.train_split]


def train(cfg, run_dir: Path, loaded=None):
    """Train adapters (or the projector alone, peft.method=none) per `cfg`; returns (model, processor). `loaded`:
    the run's splits when an earlier check already loaded them (RunContext.splits)."""
    from transformers import set_seed

    from lora_llava.train.callbacks import check_trackers
    from lora_llava.train.fit import fit, plan_resume
    from lora_llava.train.sharding import check_fsdp_supported

    run_dir = Path(run_dir)
    check_fsdp_supported(cfg.quant)  # before anything loads
    check_trackers(cfg.train.report_to)  # before the model loads: a tracker only when named and installed
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    resume = plan_resume(cfg, run_dir)  # a resume with refused config changes stops here, before any loading
    if cfg.model.projector:
        from lora_llava.models.projector import check_projector

        check_projector(cfg.model)  # a wrong model.projector stops the run here, before data and weights load
    # Data first, with the processor alone: a bad sample stops the run before any weights load.
    processor = load_processor(cfg.model)
    splits, lengths = prepare_splits(cfg, processor, run_dir, loaded)
    # Sized from the screened training rows' lengths; printed before the model loads; decides checkpointing when unset.
    checkpointing = plan_before_training(cfg, lengths)
    dtype = resolve_dtype(cfg.model.dtype)
    model, processor = build_model_and_processor(cfg.model, cfg.quant, dtype)
    # After loading (building the tiny model draws random numbers): train.seed alone fixes the adapters' init.
    set_seed(cfg.train.seed)
    model = apply_adapters(model, cfg.peft, cfg.quant.method != "none", checkpointing)
    if cfg.train.compile:
        compile_language_model(model)
    trainer = build_trainer(cfg, model, processor, splits, run_dir, dtype)
    fit(trainer, cfg, run_dir, resume)  # resume, preemption, logs, fail-fast (lora_llava/fit.py)
    return trainer.model, processor


def train_stage(cfg, ctx) -> None:
    from lora_llava.distributed import is_main_process
    from lora_llava.train.sharding import gathered_state_dict

    ctx.model, ctx.processor = train(cfg, ctx.run_dir, ctx.splits(cfg.data))
    state_dict = gathered_state_dict(ctx.model)  # under FSDP: whole tensors, gathered by every process
    if is_main_process():  # one adapter per run, however many processes trained it
        save_outputs(cfg, ctx, state_dict)
    if state_dict is not None:
        ctx.model = None  # sharded across processes; the later stages (rank 0 alone) load the saved adapter


def save_outputs(cfg, ctx, state_dict=None) -> None:
    """The adapter folder, or for an align run (peft.method=none) the projector alone."""
    from lora_llava.models.load import save_adapter

    if cfg.peft.method == "none":  # an align run: the projector is its whole output
        from lora_llava.models.projector import save_projector

        ctx.extra["projector_dir"] = save_projector(ctx.model, ctx.run_dir / "projector", base_identity(cfg.model))
        log.info("projector saved to %s (start a fine-tune from it with model.projector=%s)",
                 ctx.extra["projector_dir"], ctx.extra["projector_dir"])
        return
    ctx.adapter_dir = save_adapter(ctx.model, ctx.processor, ctx.run_dir / "adapter", cfg, state_dict=state_dict)
    log.info("adapter saved to %s", ctx.adapter_dir)
