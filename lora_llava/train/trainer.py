"""TRL's SFTTrainer with the few changes LLaVA adapters need. Kept small: each override says why."""

from __future__ import annotations

import os
import shutil

import torch
from trl import SFTTrainer

from lora_llava.train.callbacks import DivergenceWatch


class LlavaSFTTrainer(SFTTrainer):
    """SFTTrainer for batches made by lora_llava's Collator.

    `group_by_modality_length`: micro-batches of one modality, sorted by length within `length_group_window`
    micro-batches (lora_llava/sampling.py).
    `supervised_logits_only`: lm_head only on positions whose next token is a label (lora_llava/loss.py).
    `projector_base`: an align run; checkpoints hold the projector alone (models/projector.py)."""

    def __init__(self, *args, group_by_modality_length: bool = False, length_group_window: int = 1,
                 supervised_logits_only: bool = False, run_config: dict | None = None,
                 not_learning_steps: int = 0, projector_learning_rate: float | None = None,
                 projector_base: str | None = None, card_writer=None, **kwargs):
        self.group_by_modality_length, self.length_group_window = group_by_modality_length, length_group_window
        self.supervised_logits_only = supervised_logits_only
        self.sample_ids_seen: set[tuple[int, str]] = set()  # (epoch, id) trained on here; ranks compare at the end
        self._step_ids: tuple[int, list[str]] = (-1, [])  # (global step, ids of its micro-batches so far)
        self._staging: str | None = None  # set while a checkpoint is written under its temporary name
        self._pending_tokens = None  # non-padding tokens since the last log, a device tensor
        self.divergence = DivergenceWatch()
        self.projector_learning_rate = projector_learning_rate
        self.run_config = run_config  # saved in every checkpoint, compared on resume (lora_llava/train/resume.py)
        self.resume_changes: dict = {}  # set by fit(): settings that differ from the checkpoint's, allowed
        self.applied_changes: list[dict] = []
        self._step_loss = None  # this optimizer step's loss so far (a device scalar), for the learning check
        self._learning_pending: list[tuple] = []  # (step, loss, grad norm) since the last read-back
        self.projector_base = projector_base  # set for an align run (peft.method=none): the base it is aligned on
        # Our card for each checkpoint (peft's own template names the base by its local path, or "None").
        self.card_writer = card_writer
        super().__init__(*args, **kwargs)
        from lora_llava.models.fingerprint import fingerprint

        # Of the frozen base, taken once before any sharding: under FSDP, reading a sharded weight at each save on
        # rank 0 alone would be a collective that only one process joins.
        self.base_fingerprint = fingerprint(self.model)
        from lora_llava.train.callbacks import LearningCheck

        # From the config: under ZeRO-3 a sharded weight can look empty.
        vocab = self.model.config.get_text_config().vocab_size
        self.learning_check = LearningCheck(vocab, not_learning_steps) if not_learning_steps > 0 else None
        self._keep_trainable_fp32()

    def _keep_trainable_fp32(self):
        # TRL casts every trainable weight of a quantized model to bf16, the projector copy included. At the
        # projector's LLaVA learning rate (2e-5) most Adam updates are below bf16's resolution (~0.4% of the
        # weight) and vanish. Adapters are small: keep them fp32 (autocast still runs the matmuls in bf16 on GPUs).
        from lora_llava.models.adapters import cast_trainable_fp32

        cast_trainable_fp32(self.model)

    def create_accelerator_and_postprocess(self):
        # accelerate runs the FSDP preset as plain data parallel on CPU processes; shard as asked (train/sharding.py).
        super().create_accelerator_and_postprocess()
        from lora_llava.train.sharding import promote_cpu_fsdp

        if promote_cpu_fsdp(self.accelerator):
            self.is_fsdp_enabled = True

    def create_optimizer(self, model=None):
        # Two groups: adapters at learning_rate, the projector at its own rate. Built here, not passed in, because
        # FSDP refuses a prebuilt optimizer and DeepSpeed/FSDP call this after wrapping the model.
        if self.optimizer is None and self.projector_learning_rate is not None:
            from lora_llava.models.adapters import optimizer_param_groups

            model = model if model is not None else self.model
            groups = optimizer_param_groups(model, self.args.learning_rate, self.projector_learning_rate,
                                            self.args.weight_decay)
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **kwargs)
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset=None):
        # Image rows are ~600 tokens longer than text-only rows: batching them apart removes most padding.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        samples = getattr(self.data_collator, "samples", None)
        if not self.group_by_modality_length or samples is None or "sample_index" not in getattr(
                dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        from lora_llava.train.sampling import ModalityLengthGroupedSampler, sample_lengths

        rows = [samples[i] for i in dataset["sample_index"]]
        lengths = sample_lengths(rows, self.data_collator)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityLengthGroupedSampler(lengths, [bool(s.images) for s in rows], self.args.train_batch_size,
                                            seed=seed, window=self.length_group_window)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL projects every position on CPU (and computes extra metrics); only the answer positions need logits.
        from lora_llava.data.collate import ANSWER_POSITIONS

        if not self.supervised_logits_only or return_outputs or "labels" not in inputs:
            inputs.pop(ANSWER_POSITIONS, None)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from lora_llava.train.loss import supervised_logits, token_loss

        logits, targets = supervised_logits(model, inputs)
        loss = token_loss(logits, targets, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages, the count spans every rank
        self._log_answer_metrics(logits, targets, inputs)
        return loss

    def _log_answer_metrics(self, logits, targets, inputs):
        """The entropy / mean_token_accuracy / num_tokens TRL logs, from the answer logits alone. They stay on the
        device as tensors (a `.item()` here would stall the GPU every step) and are read back in `log`."""
        from lora_llava.train.loss import token_metrics

        mode = "train" if self.model.training else "eval"
        entropy, correct, count = (self.accelerator.gather_for_metrics(x).sum() for x in token_metrics(logits, targets))
        valid = count.clamp(min=1)
        self._metrics[mode]["entropy"].append(entropy / valid)
        self._metrics[mode]["mean_token_accuracy"].append(correct / valid)
        if mode == "train":
            mask = inputs.get("attention_mask")  # absent from packed (padding-free) rows: every position is real
            tokens = self.accelerator.gather_for_metrics(
                mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel(), device=logits.device)).sum()
            self._pending_tokens = tokens if self._pending_tokens is None else self._pending_tokens + tokens

    def log(self, logs, start_time=None):
        # The only read-back of the per-step metrics: once per logging step, one transfer per metric.
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if mode == "train" and self._pending_tokens is not None:
            self._total_train_tokens += int(self._pending_tokens.item())
            self._pending_tokens = None
            metrics["num_tokens"] = [self._total_train_tokens]
        for key, values in metrics.items():
            if values and torch.is_tensor(values[0]):
                metrics[key] = [torch.stack(values).float().mean().item()]
        super().log(logs, start_time)

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Sample ids travel in the batch only to name the culprits of a non-finite loss; the model never sees them.
        from lora_llava.data.collate import SAMPLE_IDS

        ids = list(inputs.pop(SAMPLE_IDS, []))
        step = self.state.global_step + 1
        self._step_ids = (step, (self._step_ids[1] if self._step_ids[0] == step else []) + ids)
        self.sample_ids_seen.update((int(self.state.epoch or 0), i) for i in ids)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.divergence.add("loss", loss, step, ids)
        # Micro-batch losses are scaled for accumulation: their sum over a step is the step's loss (kept on the device).
        self._step_loss = loss.detach() if self._step_loss is None else self._step_loss + loss.detach()
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        from lora_llava.data.collate import SAMPLE_IDS

        inputs.pop(SAMPLE_IDS, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer only hides a non-finite loss in its logs; we stop, but check on the device (see _maybe_log_save_evaluate).
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self.divergence.add("gradient norm", grad_norm, self.state.global_step + 1, self._step_ids[1])
        if self.learning_check is not None:
            self._learning_pending.append((self.state.global_step + 1, self._step_loss, grad_norm))
        self._step_loss = None
        return grad_norm

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # Non-finite values are read back before anything is logged, saved or evaluated (a checkpoint is never
        # written from diverged weights) and at the end; between those steps the GPU runs on without waiting.
        control = self.control
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.divergence.check(self.args.output_dir, self.args.process_index)
            self._check_learning()
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def _check_learning(self):
        # Read back with the divergence check, at logging/saving steps only: no host sync per step.
        if self.learning_check is None:
            return
        pending, self._learning_pending = self._learning_pending, []
        for step, loss, grad_norm in pending:
            loss = float("nan") if loss is None else float(loss)
            self.learning_check.step(step, loss, None if grad_norm is None else float(grad_norm), self.args.device)

    def _save_checkpoint(self, model, trial):
        # Written under a temporary name and renamed when complete, so a kill mid-write never leaves a
        # `checkpoint-N` that resume would trust (lora_llava/checkpoints.py).
        from pathlib import Path

        from lora_llava.errors import disk_full_message
        from lora_llava.models.fingerprint import write_fingerprint
        from lora_llava.train.checkpoints import commit, rotate, staging_root
        from lora_llava.train.resume import save_config

        step, root = self.state.global_step, Path(self.args.output_dir)
        staging = staging_root(root, step)
        if self.is_world_process_zero() and staging.exists():
            shutil.rmtree(staging)  # left by a run killed while writing this same step
        self.accelerator.wait_for_everyone()
        self._staging = str(staging)
        try:
            with disk_full_message(f"writing checkpoint-{step}", root, cleanup=staging):
                super()._save_checkpoint(model, trial)
                if self.is_world_process_zero() and self.run_config is not None:
                    save_config(self.run_config, staging / f"checkpoint-{step}")
                    write_fingerprint(self.base_fingerprint, staging / f"checkpoint-{step}")  # adapter=checkpoint-N
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the rename
        if self.is_world_process_zero():
            if self.card_writer is not None:
                self.card_writer(staging / f"checkpoint-{step}")
            commit(staging / f"checkpoint-{step}", root / f"checkpoint-{step}", step, self.args.world_size)
            rotate(root, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _load_optimizer_and_scheduler(self, checkpoint):
        # The states come back with the checkpoint's learning rates; train.resume_changes may name new ones.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint and self.resume_changes:
            from lora_llava.train.resume import apply_learning_rates

            self.applied_changes = apply_learning_rates(self.optimizer, self.lr_scheduler, self.resume_changes)

    def _save(self, output_dir=None, state_dict=None):
        # An align run trains the projector alone: its checkpoints hold that (megabytes), not a copy of the frozen
        # base (14 GB for a 7B model) as Trainer would write for a model without adapters.
        if self.projector_base is None:
            return super()._save(output_dir, state_dict)
        if self.args.should_save:
            from lora_llava.models.projector import save_projector

            save_projector(self.model, output_dir or self.args.output_dir, self.projector_base)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if self.projector_base is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from lora_llava.models.projector import load_saved

        load_saved(model if model is not None else self.model, resume_from_checkpoint, self.projector_base)
    def create_model_card(self, *args, **kwargs):
        # TRL writes checkpoints/README.md at every save, naming a local or built base "None"; ours names the base
        # the way the adapter's card does (models/card.py).
        if self.card_writer is None:
            return super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            self.card_writer(self.args.output_dir)

    def _get_output_dir(self, trial):
        return self._staging or super()._get_output_dir(trial)
