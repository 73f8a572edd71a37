"""The families table of the README: image tokens per image and what QLoRA fits in 24 GiB, per shipped model.

    python -m benchmarks.families [--gpu-gb 24] [--text-tokens 128] [--json out.json]

Nothing is trained or downloaded: each model's architecture is built from its published config.json numbers
(benchmarks/shapes.py), its image-token counts come from the family layer (transformers' own computation, fed
from the config), and the memory figures from the planner (lora_llava/plan.py), for the scienceqa recipe's
QLoRA settings (NF4 with double quantization, LoRA r=128 on the language model, projector trained). A row is one
640x480 photo plus `--text-tokens` tokens of text.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHOTO = (480, 640)  # (height, width)


def family_row(name: str, config, gpu_gb: float, text_tokens: int) -> dict:
    from lora_llava.config import compose
    from lora_llava.models.families import family_for_config
    from lora_llava.plan import count_parameters, make_plan

    family = family_for_config(config)
    base = config.vision_config.image_size
    photo = family.image_tokens_for_size(config, PHOTO)
    cfg = compose("scienceqa", [f"model={name}", f"plan.seq_len={text_tokens + photo}",
                                f"plan.gpu_memory_gb={gpu_gb}", "train.batch_size=1"])
    plan = make_plan(cfg, count_parameters(config, cfg.quant, cfg.peft))
    return {"model": name, "hub_id": cfg.model.path, "family": family.name, "parameters": plan.params.total,
            "tokens_square": family.image_tokens_for_size(config, (base, base)), "tokens_photo": photo,
            "tokens_max": family.max_image_tokens(config), "seq_len": plan.seq_len,
            "qlora_batch1_gb": plan.total_gb, "batch1_checkpointing": plan.checkpointing,
            "largest_batch": plan.largest_batch}


def main(argv=None) -> None:
    from benchmarks.shapes import published_configs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu-gb", type=float, default=24.0)
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = [family_row(name, config, args.gpu_gb, args.text_tokens) for name, config in published_configs().items()]
    print(f"QLoRA (scienceqa recipe: NF4, r=128), one {PHOTO[1]}x{PHOTO[0]} photo + {args.text_tokens} text tokens "
          f"per row, planned for {args.gpu_gb:g} GiB (lora_llava/plan.py)")
    print("| model | image tokens: square / 640x480 / largest | parameters | micro-batch 1 | largest micro-batch "
          "without / with checkpointing |")
    print("|---|---|---|---|---|")
    for r in rows:
        ckpt = "checkpointing" if r["batch1_checkpointing"] else "no checkpointing"
        print(f"| `{r['model']}` | {r['tokens_square']} / {r['tokens_photo']} / {r['tokens_max']} | "
              f"{r['parameters'] / 1e9:.2f}B | {r['qlora_batch1_gb']:.1f} GiB ({ckpt}) | "
              f"{r['largest_batch']['no checkpointing']} / {r['largest_batch']['checkpointing']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
