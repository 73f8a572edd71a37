"""lora_llava: LoRA / QLoRA fine-tuning of LLaVA vision-language models, driven by Hydra recipes."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft on every run, quantized or not) warns on CPUs with AVX512-BF16 that it cannot
# fetch an optional kernel from the Hub ("pip install kernels"): a scary line in every CPU run, about a download
# an offline run cannot make, and 4-bit on a CPU works without it. Errors still show.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
