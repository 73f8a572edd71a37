"""TRL's SFTTrainer with the few changes LLaVA adapters need. Kept small: each override says why."""

from __future__ import annotations

from trl import SFTTrainer


class LlavaSFTTrainer(SFTTrainer):
    """SFTTrainer for batches made by lora_llava's Collator.

    `group_by_modality_length`: micro-batches of one modality, sorted by length within `length_group_window`
    micro-batches (lora_llava/sampling.py).
    `supervised_logits_only`: lm_head only on positions whose next token is a label (lora_llava/loss.py)."""

    def __init__(self, *args, group_by_modality_length: bool = False, length_group_window: int = 1,
                 supervised_logits_only: bool = False,
                 **kwargs):
        self.group_by_modality_length, self.length_group_window = group_by_modality_length, length_group_window
        self.supervised_logits_only = supervised_logits_only
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        # Image rows are ~600 tokens longer than text-only rows: batching them apart removes most padding.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        samples = getattr(self.data_collator, "samples", None)
        if not self.group_by_modality_length or samples is None or "sample_index" not in getattr(
                dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        from lora_llava.data.collate import image_token_count
        from lora_llava.sampling import ModalityLengthGroupedSampler, sample_lengths

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
        from lora_llava.loss import supervised_logits, token_loss

        logits, targets = supervised_logits(model, inputs)
        loss = token_loss(logits, targets, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages, the count spans every rank
        self._log_answer_metrics(logits, targets, inputs)
        return loss

    def _log_answer_metrics(self, logits, targets, inputs):
        """The entropy / mean_token_accuracy / num_tokens TRL logs, from the answer logits alone."""
        from lora_llava.loss import token_metrics

        mode = "train" if self.model.training else "eval"
        entropy, correct, count = (self.accelerator.gather_for_metrics(x).sum() for x in token_metrics(logits, targets))
        valid = max(count.item(), 1)
        self._metrics[mode]["entropy"].append(entropy.item() / valid)
        self._metrics[mode]["mean_token_accuracy"].append(correct.item() / valid)
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
