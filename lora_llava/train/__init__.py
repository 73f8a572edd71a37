"""The train stage: TRL's SFTTrainer with answer-only loss, modality-grouped batches, safe checkpoints, resume."""
