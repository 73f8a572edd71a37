"""lora_llava: LoRA / QLoRA fine-tuning of LLaVA vision-language models, driven by Hydra recipes."""

__version__ = "0.1.0"
