"""The adapter's README.md model card: Hub metadata in YAML front matter, the scores, how to load it."""

from __future__ import annotations

from pathlib import Path


def card_metadata(cfg) -> dict:
    base = cfg.model.path
    tags = ["llava", "lora" if cfg.quant.method == "none" else "qlora", "peft", "image-text-to-text"]
    if cfg.data.source != "synthetic":
        tags.append(cfg.data.source)
    meta = {"base_model": base, "library_name": "peft", "pipeline_tag": "image-text-to-text", "tags": tags}
    if cfg.model.license:
        meta["license"] = cfg.model.license
    if cfg.data.path and cfg.data.source == "hf" or (cfg.data.source == "scienceqa" and cfg.data.path):
        meta["datasets"] = [cfg.data.path]
    return meta


def write_model_card(out_dir: Path, cfg, metrics: dict | None = None) -> None:
    import yaml

    meta = card_metadata(cfg)
    body = [f"# {cfg.recipe_name} adapter for {cfg.model.path}", "",
            f"LoRA (r={cfg.peft.r}, alpha={cfg.peft.lora_alpha}) on the language model of {cfg.model.path}, "
            "with the multimodal projector trained and saved alongside. Made with lora_llava.", ""]
    if metrics:
        body += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        body += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                 for k, v in metrics.items() if not isinstance(v, dict)]
        body.append("")
    body += ["## Load it", "", "```python", "from peft import PeftModel",
             "from transformers import AutoProcessor, LlavaForConditionalGeneration", "",
             f'base = LlavaForConditionalGeneration.from_pretrained("{cfg.model.path}")',
             'model = PeftModel.from_pretrained(base, "<this repo or folder>")',
             'processor = AutoProcessor.from_pretrained("<this repo or folder>")', "```", ""]
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(body)
    (Path(out_dir) / "README.md").write_text(text)
