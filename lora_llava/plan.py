"""The memory planner: will this run fit the GPU, with what micro-batch, and does it need gradient checkpointing?

Parameter counts come from the configured model built on the meta device (only its config.json is read), so they
are exact. Memory is then estimated per part:

weights      quantized linears at their packed size (NF4: 4 bits + one 8-bit absmax per 64 weights + one fp32 per
             256 absmax with double quantization; int8: 1 byte); every other parameter (CLIP tower, projector,
             embeddings, lm_head, norms) in the compute dtype, QLoRA included (models/adapters.py keeps them
             16-bit where peft's prepare_model_for_kbit_training made them fp32).
adapters +   LoRA weights and the trained projector copy, fp32 (LlavaSFTTrainer keeps them fp32), each with its
optimizer    gradient and optimizer state (AdamW: two fp32 moments; 8-bit AdamW: two 1-byte moments).
activations  what autograd keeps for backward, in bytes per token per decoder layer (`layer_bytes_per_token`),
             for the widest micro-batch: batch x the longest training row measured (data/lengths.py), or
             x plan.seq_len / data.max_length, image tokens included, plus the projector's per image. The frozen
             CLIP tower keeps nothing (no parameter or input of it needs a gradient). With gradient checkpointing,
             each layer keeps only its input (the residual stream) and one layer is recomputed at a time.
logits       with train.supervised_logits_only: (batch x answer tokens) rows of fp32 vocab logits; otherwise TRL's
             chunked log-prob head: a 4096 x 32768 tile and an fp32 gradient of the hidden states.
CUDA         plan.cuda_overhead_gb: the CUDA context, cuBLAS workspace and allocator fragmentation.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass

log = logging.getLogger("lora_llava")

GiB = 1024**3
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # double quantization on / off
TRL_LOGPROB_TILE = (4096, 32768)  # trl.kernels.chunked_logprob: tokens x vocab projected at a time


@dataclass
class ParamCounts:
    total: int
    quantizable: int  # Linear weights a bitsandbytes config would pack (all but quant.skip_modules)
    frozen_other: int  # every other base parameter: CLIP tower, projector, embeddings, lm_head, norms
    lora: int  # added by the adapter config
    projector: int  # trained copy when peft.train_projector
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    vision_hidden: int
    image_tokens: int  # per image: LLaVA-1.5's fixed count, or an anyres family's largest (its biggest tile grid)


def model_config(model_cfg):
    """The configured checkpoint's config.json (the Hub's or a local one; the tiny models are built locally), with
    model.max_image_tiles applied to its tile grids."""
    from lora_llava.models.load import load_config

    return load_config(model_cfg)


def count_parameters(config, quant_cfg, peft_cfg) -> ParamCounts:
    """Exact counts from the model instantiated on the meta device (no memory, no weights); module names and
    image tokens per image (the largest, for anyres families) from the config's model family."""
    import torch
    from transformers import AutoModelForImageTextToText

    from lora_llava.models.families import family_for_config

    family = family_for_config(config)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    skip = [*family.never_quantized(), *quant_cfg.skip_modules] if quant_cfg.method != "none" else None
    targets = re.compile(family.lora_target_regex(peft_cfg.target_modules, peft_cfg.scope))
    quantizable = lora = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if skip is not None and not any(part in name.split(".") for part in skip):
            quantizable += module.weight.numel()
        if targets.match(name) and peft_cfg.method != "none":  # none: an align run, the projector alone
            lora += peft_cfg.r * (module.in_features + module.out_features)
            lora += module.out_features if peft_cfg.use_dora else 0  # DoRA's magnitude vector
    total = sum(p.numel() for p in model.parameters())
    projector = sum(p.numel() for n, p in model.named_parameters() if family.projector in n)
    text, vision = config.text_config, config.vision_config
    return ParamCounts(
        total=total, quantizable=quantizable, frozen_other=total - quantizable, lora=lora,
        projector=projector if peft_cfg.train_projector else 0,
        hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
        heads=text.num_attention_heads, kv_heads=text.num_key_value_heads or text.num_attention_heads,
        vocab=text.vocab_size, vision_hidden=vision.hidden_size, image_tokens=family.max_image_tokens(config),
    )


def layer_bytes_per_token(c: ParamCounts, dtype_bytes: int, dropout: bool, qlora: bool) -> float:
    """Bytes one Llama decoder layer keeps for backward, per token, with frozen base weights, LoRA on all seven
    linears and SDPA attention (no seq x seq matrix). In units of h (hidden) and i (intermediate), bf16:
      each RMSNorm keeps the fp32 copy of its input                                  2 x 4h
      SDPA keeps q and k (after RoPE), v and its output                               2h x (2 + 2 kv/heads)
      MLP: the gate output, its SiLU and the up output (for the product)              6i
      each adapter input, kept by lora_A: with lora_dropout a dropped copy (2 bytes)
        and its mask (1 byte) per adapter, 5 x 3h + 3h + 3i; without, the norm outputs,
        the attention output and the down_proj input, once each                        2h + 2h + 2h + 2i
      attention kernel statistics, RoPE tables, masks (not itemized)                  3h
    That is 37h + 9i with dropout (260 KB per token for Llama-2-7B); measured on an H200 (docs/benchmarks.md):
    250 KB. QLoRA measured +14.4h more under peft's prepare_model_for_kbit_training, which upcast the embeddings
    and norms (an fp32 residual stream, and bf16 autocast copies of it); our own casts keep them 16-bit, so the
    QLoRA layer is counted as the LoRA one (`qlora` is kept for callers; to re-measure on a GPU).
    """
    h, i, p = c.hidden, c.intermediate, dtype_bytes / 2
    kv = c.kv_heads / c.heads
    units = 8 * h + 2 * h * (2 + 2 * kv) + 6 * i + 3 * h
    units += (15 * h + 3 * h + 3 * i) if dropout else (6 * h + 2 * i)
    return units * p


def activation_bytes(c: ParamCounts, batch: int, seq: int, dtype_bytes: int, dropout: bool, qlora: bool,
                     checkpointing: bool) -> float:
    tokens = batch * seq
    layer = layer_bytes_per_token(c, dtype_bytes, dropout, qlora) * tokens
    residual = dtype_bytes * c.hidden * tokens  # one layer's input (16-bit under QLoRA too: no fp32 upcast)
    # Projector (trained): its input, GELU input/output and output, per image (one per row assumed).
    projector = batch * c.image_tokens * (c.vision_hidden + 3 * c.hidden) * dtype_bytes
    final_norm = 6 * c.hidden * tokens * dtype_bytes / 2
    if checkpointing:
        # Layer inputs kept; one layer recomputed in backward, with its gradients (about one more layer's worth).
        return c.layers * residual + 2 * layer + projector + final_norm
    return c.layers * layer + layer + projector + final_norm


def logits_bytes(c: ParamCounts, batch: int, seq: int, answer_tokens: int, dtype_bytes: int,
                 supervised_only: bool) -> float:
    if supervised_only:
        # bf16 logits, their fp32 copy, log-softmax and gradient: about 16 bytes per vocab entry per answer token.
        return batch * answer_tokens * c.vocab * 16
    tokens = batch * seq
    tile = min(tokens, TRL_LOGPROB_TILE[0]) * min(c.vocab, TRL_LOGPROB_TILE[1]) * dtype_bytes
    return tile + tokens * c.hidden * (4 + dtype_bytes)  # fp32 grad of the hidden states + their sliced copy


def static_bytes(c: ParamCounts, quant_method: str, double_quant: bool, dtype_bytes: int, optim: str) -> dict:
    """Weights, and adapters with gradients and optimizer state: what does not grow with the batch."""
    packed = {"nf4": NF4_BYTES[double_quant], "int8": 1.0}.get(quant_method, dtype_bytes)
    weights = c.quantizable * packed + c.frozen_other * dtype_bytes  # tower, embeddings, lm_head stay 16-bit
    # Trainable weights are fp32: peft keeps LoRA in fp32 and LlavaSFTTrainer undoes TRL's bf16 cast of them.
    lora_bytes = projector_bytes = 4

    def trained(n: int, size: int) -> float:  # weight + gradient + two AdamW moments (8-bit AdamW: 1 byte each)
        return n * (2 * size + (2 if "8bit" in optim else 2 * size))

    return {"weights": weights, "adapters + optimizer": trained(c.lora, lora_bytes) + trained(c.projector,
                                                                                          projector_bytes)}


@dataclass
class MemoryPlan:
    model: str
    batch_size: int
    seq_len: int
    checkpointing: bool
    gpu_memory_gb: float
    parts_gb: dict
    total_gb: float
    fits: bool
    largest_batch: dict  # {"checkpointing": n, "no checkpointing": n}
    recommend_checkpointing: bool
    params: ParamCounts
    seq_from: str = "data.max_length"  # where seq_len came from: plan.seq_len, data.max_length or the data
    lengths: dict | None = None  # the measured length distribution (data/lengths.py Lengths.summary)

    def table(self) -> str:
        lines = [(f"memory plan: {self.model}, micro-batch {self.batch_size} x {self.seq_len:,} tokens "
                  f"({self.seq_from}), gradient checkpointing {'on' if self.checkpointing else 'off'}")]
        lines += length_lines(self.lengths) if self.lengths else []
        lines += [f"  {part:<22}{gb:8.2f} GiB" for part, gb in self.parts_gb.items()]
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"  {'total':<22}{self.total_gb:8.2f} GiB  ({verdict} in {self.gpu_memory_gb:g} GiB)")
        lines.append(f"  parameters {self.params.total:,} (LoRA {self.params.lora:,}, "
                     f"projector {self.params.projector:,})")
        lines.append(f"  largest micro-batch: {self.largest_batch['no checkpointing']} without checkpointing, "
                     f"{self.largest_batch['checkpointing']} with; suggestion: checkpointing "
                     f"{'on' if self.recommend_checkpointing else 'off'}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_gb(c: ParamCounts, cfg, batch: int, seq: int, checkpointing: bool) -> dict:
    """Per-part estimate in GiB for one configuration."""
    dtype_bytes = 4 if cfg.model.dtype == "float32" else 2
    qlora = cfg.quant.method != "none"
    parts = static_bytes(c, cfg.quant.method, cfg.quant.bnb_4bit_use_double_quant, dtype_bytes, cfg.train.optim)
    parts["activations"] = activation_bytes(c, batch, seq, dtype_bytes, cfg.peft.lora_dropout > 0, qlora,
                                            checkpointing)
    parts["logits"] = logits_bytes(c, batch, seq, cfg.plan.answer_tokens, dtype_bytes,
                                   cfg.train.supervised_logits_only)
    parts = {k: v / GiB for k, v in parts.items()}
    parts["CUDA overhead"] = cfg.plan.cuda_overhead_gb
    return parts


def largest_batch(c: ParamCounts, cfg, seq: int, checkpointing: bool, budget: float, limit: int = 1024) -> int:
    """The largest micro-batch whose estimate fits `budget` GiB (0: not even one row)."""
    best = 0
    while best < limit and sum(estimate_gb(c, cfg, best + 1, seq, checkpointing).values()) <= budget:
        best += 1
    return best


def gpu_budget_gb(plan_cfg) -> float:
    """plan.gpu_memory_gb, or this machine's GPU when it is null (24 GiB without one)."""
    if plan_cfg.gpu_memory_gb is not None:
        return float(plan_cfg.gpu_memory_gb)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GiB
    return 24.0


def length_lines(summary: dict) -> list[str]:
    def fmt(spread: dict) -> str:
        return "/".join(f"{spread[k]:,}" for k in ("min", "median", "p95", "max")) if spread else "-"

    lines = [(f"  training rows measured: {summary['samples']:,} ({summary['with_image']:,} with an image); tokens "
              f"min/median/p95/max {fmt(summary['tokens'])} (image rows {fmt(summary['tokens_image_rows'])}, "
              f"text-only {fmt(summary['tokens_text_rows'])}); answer tokens max "
              f"{summary['answer_tokens'].get('max', 0)}")]
    if summary["refused"]:
        lines.append(f"  {summary['refused']:,} rows not measured: the collator refuses them (screening rejects "
                     "them or stops the run; stages=[validate] lists them)")
    return lines


def planned_rows(cfg, lengths=None) -> tuple[int, int, str]:
    """(tokens per row, answer tokens per row, where they came from) for the widest micro-batch: plan.seq_len when
    set, else the measured longest row (Lengths.longest_batch), else data.max_length."""
    if cfg.plan.seq_len:
        return cfg.plan.seq_len, cfg.plan.answer_tokens, "plan.seq_len"
    if lengths is not None and lengths.tokens:
        longest = lengths.longest_batch(cfg.train.batch_size)
        return longest["width"], longest["answer_tokens"], "the longest training row"
    return cfg.data.max_length, cfg.plan.answer_tokens, "data.max_length"


def make_plan(cfg, counts: ParamCounts | None = None, lengths=None) -> MemoryPlan:
    """The plan for `cfg`; `lengths` (data/lengths.py, the training rows measured) sizes the activations from
    the widest micro-batch the data can form instead of data.max_length."""
    counts = counts or count_parameters(model_config(cfg.model), cfg.quant, cfg.peft)
    seq, answer_tokens, seq_from = planned_rows(cfg, lengths)
    if answer_tokens != cfg.plan.answer_tokens:
        from omegaconf import OmegaConf

        cfg = OmegaConf.merge(cfg, {"plan": {"answer_tokens": answer_tokens}})  # a copy: the run's cfg is untouched
    budget = gpu_budget_gb(cfg.plan)
    batch = cfg.train.batch_size
    largest = {"checkpointing": largest_batch(counts, cfg, seq, True, budget),
               "no checkpointing": largest_batch(counts, cfg, seq, False, budget)}
    recommend = largest["no checkpointing"] < batch
    checkpointing = recommend if cfg.train.gradient_checkpointing is None else bool(cfg.train.gradient_checkpointing)
    parts = estimate_gb(counts, cfg, batch, seq, checkpointing)
    total = sum(parts.values())
    return MemoryPlan(model=cfg.model.path, batch_size=batch, seq_len=seq, checkpointing=checkpointing,
                      gpu_memory_gb=round(budget, 2), parts_gb={k: round(v, 3) for k, v in parts.items()},
                      total_gb=round(total, 3), fits=total <= budget, largest_batch=largest,
                      recommend_checkpointing=recommend, params=counts, seq_from=seq_from,
                      lengths=lengths.summary() if lengths is not None and seq_from != "plan.seq_len" else None)


def measure_training_rows(cfg, processor=None, load=None):
    """The training split's lengths (data/lengths.py) when the plan is sized from the data, else None: the split
    loaded as a run would (processor only, no weights). `load`: the run's data loader (RunContext.splits)."""
    if not cfg.plan.from_data or cfg.plan.seq_len:
        return None
    from lora_llava.data import training_splits
    from lora_llava.data.lengths import measure
    from lora_llava.models.load import load_processor

    processor = processor or load_processor(cfg.model)
    # A missing training split stops here with the split names (training_splits); so does an empty one.
    splits = training_splits(cfg.data, cfg.train.answer_suffix, load(cfg.data) if load else None)
    return measure(splits[cfg.data.train_split], processor, cfg.data)


def plan_stage(cfg, ctx) -> None:
    """stages=[plan]: print the plan and write plan.json into the run directory."""
    plan = make_plan(cfg, lengths=measure_training_rows(cfg, ctx.processor, ctx.splits))
    print(plan.table())
    (ctx.run_dir / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2))
    ctx.extra["plan"] = plan
    if not plan.fits:
        quant = "" if cfg.peft.method == "none" else ", or use quant=nf4"  # align runs need the 16-bit base
        log.warning("the plan does not fit %.0f GiB: lower train.batch_size (largest: %s) or data.max_length%s",
                    plan.gpu_memory_gb, plan.largest_batch, quant)


def plan_before_training(cfg, lengths=None) -> bool:
    """Print the plan for this run and return whether to checkpoint: train.gradient_checkpointing when set,
    otherwise the planner's choice (off whenever the micro-batch fits without it; it costs ~a third more compute).
    `lengths`: the screened training rows' lengths (Screened.lengths), which size the activations unless
    plan.from_data=false or plan.seq_len is set."""
    plan = make_plan(cfg, lengths=lengths if cfg.plan.from_data else None)
    print(plan.table(), flush=True)
    if not plan.fits:
        log.warning("the memory plan exceeds %.0f GiB; the run may run out of GPU memory (see the plan above)",
                    plan.gpu_memory_gb)
    return plan.checkpointing
