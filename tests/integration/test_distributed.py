"""More than one process: `torchrun --nproc_per_node 2` (CPU, gloo) of the smoke recipe trains on disjoint shards,
writes one adapter and one set of reports from rank 0, logs the world size, and scores as well as one process;
`accelerate launch` with the shipped DDP preset does the same; SIGTERM to the launcher stops both ranks at one step
and the resumed run is exact; the FSDP / DeepSpeed presets are valid accelerate configs; processes that could not
agree on a run directory are stopped before they start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lora_llava.config import config_dirs

PRESETS = sorted((config_dirs()[0] / "accelerate").glob("*.yaml"))


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_are_accelerate_configs_with_known_options(preset):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    ClusterConfig.from_yaml_file(str(preset))  # unknown top-level keys raise
    options = {a.dest for a in launch_command_parser()._actions}
    nested = yaml.safe_load(preset.read_text())
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in nested.get(section, {}):
            name = key if key.startswith(prefix) else prefix + key
            assert name in options, f"{preset.name}: {section}.{key} is not an `accelerate launch` option"


def test_presets_cover_ddp_fsdp_and_zero():
    kinds = {yaml.safe_load(p.read_text())["distributed_type"] for p in PRESETS}
    stages = {yaml.safe_load(p.read_text()).get("deepspeed_config", {}).get("zero_stage") for p in PRESETS}
    assert {"MULTI_GPU", "FSDP", "DEEPSPEED"} <= kinds and {2, 3} <= stages


def test_a_launch_without_a_shared_run_directory_stops_before_composing(tmp_path):
    checkout = str(Path(__file__).resolve().parents[2])
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "PYTHONPATH": checkout}
    proc = subprocess.run([sys.executable, "-m", "lora_llava", "recipe=smoke"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0
    assert "process 1 of 2" in proc.stderr and "hydra.run.dir=" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_the_trainer_builds_the_two_group_optimizer(tmp_path):
    """FSDP refuses an optimizer built before the Trainer: ours is built by it, with the projector's own rate."""
    from lora_llava.data import load_splits
    from lora_llava.models.adapters import apply_adapters
    from lora_llava.models.load import build_model_and_processor
    from lora_llava.train.stage import build_trainer
    from tests.conftest import smoke_config

    cfg = smoke_config("train.learning_rate=1e-3", "train.projector_learning_rate=1e-4",
                       "data.synthetic.n_train=8", "data.synthetic.n_eval=4")
    model, processor = build_model_and_processor(cfg.model, cfg.quant)
    model = apply_adapters(model, cfg.peft, False, False)
    trainer = build_trainer(cfg, model, processor, load_splits(cfg.data), tmp_path, model.dtype)
    assert trainer.optimizer is None
    groups = trainer.create_optimizer().param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    projector = {id(p) for n, p in model.named_parameters() if "multi_modal_projector" in n and p.requires_grad}
    assert {id(p) for p in groups[1]["params"]} == projector


def _launch(launcher: list[str], run_dir: Path, *overrides: str, timeout: int = 900, env: dict | None = None):
    cmd = [*launcher, "-m", "lora_llava", "recipe=smoke", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**_env(), **(env or {})}, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _check_rank0_wrote_one_run(run_dir: Path, output: str, n_train: int):
    rows = [json.loads(line) for line in (run_dir / "logs/train_log.jsonl").open()]
    start = next(r for r in rows if r.get("event") == "start")
    shards = next(r for r in rows if r.get("event") == "data_shards")
    assert start["world_size"] == 2 and "training: world size 2" in output
    # every (epoch, sample) trained exactly once, by one of the two ranks
    epochs = next(r["epoch"] for r in reversed(rows) if "epoch" in r)  # the trainer's last row (events follow it)
    assert shards["overlap"] == 0 and sum(shards["samples_by_rank"]) == n_train * epochs
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".log") == ["__main__.log", "rank1.log"]
    assert (run_dir / "adapter/adapter_model.safetensors").is_file()
    assert len(list((run_dir / "logs").glob("events.out.tfevents.*"))) == 1  # one TensorBoard writer: rank 0


@pytest.mark.slow  # ~60-70 s on 2 idle cores, several minutes on a busy machine
def test_torchrun_two_processes_train_the_smoke_recipe(tmp_path):
    """Per-process batch 8 keeps the single-process global batch of 16, so the same bar applies."""
    run_dir = tmp_path / "ddp"
    output = _launch(["torchrun", "--nproc_per_node", "2"], run_dir, "train.batch_size=8")
    _check_rank0_wrote_one_run(run_dir, output, 512)
    metrics = json.loads((run_dir / "eval/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9, metrics


@pytest.mark.slow
def test_accelerate_launch_with_the_ddp_preset(tmp_path):
    run_dir = tmp_path / "accelerate"
    preset = config_dirs()[0] / "accelerate" / "ddp.yaml"
    output = _launch(["accelerate", "launch", "--config_file", str(preset)], run_dir, "stages=[train]",
                     "data.synthetic.n_train=32", "train.batch_size=4", "train.max_steps=8")
    _check_rank0_wrote_one_run(run_dir, output, 32)


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "logs/train_log.jsonl").open()) if "loss" in r}


@pytest.mark.slow  # three 2-process launches
def test_torchrun_sigterm_stops_every_rank_at_one_step_and_resumes_exactly(tmp_path):
    """SIGTERM to the launcher reaches both ranks at different moments; they agree on one step, save one
    checkpoint, and `train.resume=auto` under torchrun continues the straight run's trajectory exactly."""
    import signal
    import time

    from safetensors.torch import load_file

    overrides = ["stages=[train]", "data.synthetic.n_train=64", "train.batch_size=4", "train.epochs=3",
                 "train.logging_steps=1", "train.eval_steps=null"]
    launcher = ["torchrun", "--nproc_per_node", "2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _launch(launcher, straight, *overrides)
    cmd = [*launcher, "-m", "lora_llava", "recipe=smoke", *overrides, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    deadline = time.time() + 600
    while not ((killed / "logs/train_log.jsonl").is_file() and _losses(killed)) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=600)[0]
    stopped = max(_losses(killed))
    assert stopped < 24 and f"stopped by SIGTERM after step {stopped}" in output, output[-3000:]
    assert sorted(p.name for p in (killed / "checkpoints").glob("checkpoint-*")) == [f"checkpoint-{stopped}"]
    _launch(launcher, killed, *overrides, "train.resume=auto")
    expected, actual = _losses(straight), _losses(killed)
    assert sorted(actual) == sorted(expected) == list(range(1, 25))
    assert all(abs(actual[s] - expected[s]) <= 1e-6 for s in expected)
    a, b = (load_file(d / "adapter/adapter_model.safetensors") for d in (straight, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # two smoke trainings (one process, then FSDP2 over two): ~2 min on 2 idle cores, far more when busy
def test_fsdp_preset_trains_the_smoke_recipe_like_one_process(tmp_path):
    """conf/accelerate/fsdp.yaml on two CPU processes (gloo): the parameters really are sharded (accelerate alone
    would fall back to plain data parallel on CPUs), the held-out accuracy is within 0.05 of a single process with
    the same global batch, and the adapter saved from the gathered full state dict loads with peft and holds
    every tensor whole."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    from lora_llava.models.load import checkpoint_path
    from tests.conftest import smoke_config

    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    # One thread, as torchrun / accelerate give each of their processes (and far faster on a busy machine).
    _launch([sys.executable], single, "stages=[train,eval]", timeout=2400, env={"OMP_NUM_THREADS": "1"})
    preset = config_dirs()[0] / "accelerate" / "fsdp.yaml"
    accelerate = str(Path(sys.executable).with_name("accelerate"))  # this interpreter's, activated or not
    output = _launch([accelerate, "launch", "--config_file", str(preset)], sharded, "stages=[train,eval]",
                     "train.batch_size=8", timeout=2400)
    assert "FSDP2 on 2 CPU processes (gloo)" in output and "gathered the full state dict" in output, output[-3000:]
    _check_rank0_wrote_one_run(sharded, output, 512)
    accuracy = {d.name: json.loads((d / "eval/metrics.json").read_text())["accuracy"] for d in (single, sharded)}
    assert abs(accuracy["fsdp"] - accuracy["single"]) <= 0.05, accuracy
    whole, gathered = (load_file(d / "adapter/adapter_model.safetensors") for d in (single, sharded))
    assert {k: v.shape for k, v in gathered.items()} == {k: v.shape for k, v in whole.items()}
    base = LlavaForConditionalGeneration.from_pretrained(checkpoint_path(smoke_config().model))
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(base, str(sharded / "adapter")))
    assert sorted(loaded) == sorted(gathered)
    assert all(torch.equal(loaded[k], gathered[k]) for k in gathered)


def test_qlora_under_fsdp_is_refused_before_anything_loads(monkeypatch):
    from lora_llava.errors import ConfigError
    from lora_llava.train.stage import train
    from tests.conftest import smoke_config

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="quant=nf4 under FSDP.*bnb_4bit_quant_storage"):
        train(smoke_config("quant=nf4"), Path("/nonexistent/run"))


def test_a_deepspeed_preset_that_accelerate_would_drop_is_refused(monkeypatch):
    """On CPU processes accelerate ignores DeepSpeed and trains with plain DDP; we stop instead of pretending."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lora_llava.errors import ConfigError
    from lora_llava.train.sharding import check_deepspeed_kept

    check_deepspeed_kept(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))  # not asked for: fine
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    check_deepspeed_kept(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
    with pytest.raises(ConfigError, match="plain data parallel"):
        check_deepspeed_kept(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
