"""TRL's SFTTrainer with the few changes LLaVA adapters need. Kept small: each override says why."""

from __future__ import annotations

from trl import SFTTrainer


class LlavaSFTTrainer(SFTTrainer):
    """SFTTrainer for batches made by lora_llava's Collator."""
