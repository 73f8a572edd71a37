"""TRL's SFTTrainer with the few changes LLaVA adapters need. Kept small: each override says why."""

from __future__ import annotations

import os
import shutil

import torch
from trl import SFTTrainer


class LlavaSFTTrainer(SFTTrainer):
    """SFTTrainer for batches made by lora_llava's Collator.

    `group_by_modality_length`: micro-batches of one modality, sorted by length within `length_group_window`
    micro-batches (lora_llava/sampling.py).
    `supervised_logits_only`: lm_head only on positions whose next token is a label (lora_llava/loss.py)."""

    def __init__(self, *args, group_by_modality_length: bool = False, length_group_window: int = 1,
                 supervised_logits_only: bool = False,
                 projector_learning_rate: float | None = None, card_writer=None, **kwargs):
        self.group_by_modality_length, self.length_group_window = group_by_modality_length, length_group_window
        self.supervised_logits_only = supervised_logits_only
        self.sample_ids_seen: set[tuple[int, str]] = set()  # (epoch, id) trained on here; ranks compare at the end
        self._step_ids: tuple[int, list[str]] = (-1, [])  # (global step, ids of its micro-batches so far)
        self._staging: str | None = None  # set while a checkpoint is written under its temporary name
        self.projector_learning_rate = projector_learning_rate
        # Our card for each checkpoint (peft's own template names the base by its local path, or "None").
        self.card_writer = card_writer
        super().__init__(*args, **kwargs)
        self._keep_trainable_fp32()

    def _keep_trainable_fp32(self):
        # TRL casts every trainable weight of a quantized model to bf16, the projector copy included. At the
        # projector's LLaVA learning rate (2e-5) most Adam updates are below bf16's resolution (~0.4% of the
        # weight) and vanish, and on CPU the bf16 projector meets fp32 activations and fails. Adapters are small:
        # keep them and the projector in fp32 (autocast still runs the matmuls in bf16 on GPUs).
        for param in self.model.parameters():
            if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
                param.data = param.data.float()

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
        from lora_llava.data.collate import image_token_count
        from lora_llava.train.sampling import ModalityLengthGroupedSampler, sample_lengths

        rows = [samples[i] for i in dataset["sample_index"]]
        collator = self.data_collator
        lengths = sample_lengths(rows, collator.tokenizer, image_token_count(collator.processor),
                                 collator.system_prompt)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityLengthGroupedSampler(lengths, [bool(s.images) for s in rows], self.args.train_batch_size,
                                            seed=seed, window=self.length_group_window)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL projects every position on CPU (and computes extra metrics); only the answer positions need logits.
        if not self.supervised_logits_only or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from lora_llava.train.loss import supervised_logits, token_loss

        logits, targets = supervised_logits(model, inputs)
        loss = token_loss(logits, targets, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages, the count spans every rank
        self._log_answer_metrics(logits, targets, inputs)
        return loss

    def _log_answer_metrics(self, logits, targets, inputs):
        """The entropy / mean_token_accuracy / num_tokens TRL logs, from the answer logits alone."""
        from lora_llava.train.loss import token_metrics

        mode = "train" if self.model.training else "eval"
        entropy, correct, count = (self.accelerator.gather_for_metrics(x).sum() for x in token_metrics(logits, targets))
        valid = max(count.item(), 1)
        self._metrics[mode]["entropy"].append(entropy.item() / valid)
        self._metrics[mode]["mean_token_accuracy"].append(correct.item() / valid)
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Sample ids travel in the batch only to name the culprits of a non-finite loss; the model never sees them.
        from lora_llava.data.collate import SAMPLE_IDS

        ids = inputs.pop(SAMPLE_IDS, [])
        step = self.state.global_step
        self._step_ids = (step, (self._step_ids[1] if self._step_ids[0] == step else []) + list(ids))
        self.sample_ids_seen.update((int(self.state.epoch or 0), i) for i in ids)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._check_finite("loss", loss)
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        from lora_llava.data.collate import SAMPLE_IDS

        inputs.pop(SAMPLE_IDS, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _get_grad_norm(self, model, grad_norm=None):
        # Trainer only hides a non-finite loss in its logs and steps the optimizer on NaN gradients; stop instead.
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self._check_finite("gradient norm", grad_norm)
        return grad_norm

    def _check_finite(self, what, value):
        from lora_llava.train.callbacks import check_finite

        check_finite(what, value, self.state.global_step + 1, self._step_ids[1], self.args.output_dir,
                     self.args.process_index)

    def _save_checkpoint(self, model, trial):
        # Written under a temporary name and renamed when complete, so a kill mid-write never leaves a
        # `checkpoint-N` that resume would trust (lora_llava/checkpoints.py).
        from pathlib import Path

        from lora_llava.train.checkpoints import commit, rotate, staging_root

        step, root = self.state.global_step, Path(self.args.output_dir)
        staging = staging_root(root, step)
        if self.is_world_process_zero() and staging.exists():
            shutil.rmtree(staging)  # left by a run killed while writing this same step
        self.accelerator.wait_for_everyone()
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in before the rename
        if self.is_world_process_zero():
            if self.card_writer is not None:
                self.card_writer(staging / f"checkpoint-{step}")
            commit(staging / f"checkpoint-{step}", root / f"checkpoint-{step}", step, self.args.world_size)
            rotate(root, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

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
