"""Every command README.md shows in a ```bash block is run here, offline, as written, with the substitutions
the table below states for each (a download, a GPU or a Hub account it needs).

The substitutions:
- the README's 7B model needs a download (and a GPU for NF4): `model=tiny quant=none`, the tiny random LLaVA;
- ScienceQA from the Hub needs a download: a 12-problem copy of the original release's layout written here
  (`data.path=<workspace>/sqa`); the README's own file names (llava_test_CQM-A.json, images/test, answers.jsonl,
  cat.png, my_conf/my_domain.yaml from the README's YAML block) are written into the working directory;
- training is kept lean: `train.max_steps=2`, `eval.limit=4`, `eval.max_new_tokens=4`, no trackers;
- `adapter=PATH` / `model.path=MERGED_DIR` point at what the README's own train and export commands made here;
- a push would need a Hub account: `hub.dry_run=true` (the push itself is tested against a fake Hub elsewhere).

Cheap commands (--cfg job, validate, plan, scoring a predictions file, a sweep of plans) run in full by
default. The others run in full under `-m slow`; by default each is composed exactly as the CLI would, with its
substitutions, and put through the checks a run makes before loading anything (lora_llava.checks and
lora_llava.preflight), so a README command that cannot run fails here without training anything. A README
command that has no entry in COMMANDS fails the test: add one when you add a command to the README.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TINY = ("model=tiny", "quant=none")
LEAN = ("train.max_steps=2", "train.save_steps=1", "eval.limit=4", "eval.max_new_tokens=4", "eval.batch_size=4",
        "train.report_to=[]", "train.eval_steps=null")
SQA = TINY + ("data.path={ws}/sqa",)


@dataclass(frozen=True)
class Entry:
    """How one README command runs here. `extra` is appended to its arguments (the substitution); `full`:
    'default' runs it in full by default, 'slow' under -m slow (config checks by default), 'setup' an install
    command run in its checking form under -m slow."""

    full: str
    extra: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    produces: str | None = None  # what later commands use: "adapter" or "merged"
    # full="elsewhere": the test that runs this command as written, with its own substitutions ("file::function");
    # full="not_run": why this project cannot run it at all (stated in the README beside the command too).
    by: str = ""


ADAPTER = (("adapter=PATH", "adapter={adapter}"),)
COMMANDS = {
    "python3 -m venv .venv && . .venv/bin/activate": Entry("setup"),
    'pip install "torch==2.13.0" -e ".[test]"': Entry(
        "setup", replace=(("pip install", "python -m pip install --dry-run --no-deps --no-index --no-build-isolation"),
                          ('".[test]"', str(ROOT) + "[test]"))),
    "HF_HUB_OFFLINE=1 python -m lora_llava recipe=smoke": Entry("slow", LEAN + ("data.synthetic.n_eval=8",)),
    "python -m pytest": Entry("slow", ("--collect-only", "-q", str(ROOT / "tests"))),  # the suite inside itself
    "python -m lora_llava recipe=scienceqa": Entry("slow", SQA + LEAN + ("hydra.run.dir={ws}/sqa-run",),
                                                   produces="adapter"),
    "python -m lora_llava recipe=scienceqa peft.r=64 train.epochs=3": Entry("slow", SQA + LEAN),
    "python -m lora_llava recipe=scienceqa --cfg job": Entry("default"),
    "python -m lora_llava -m recipe=smoke peft.r=8,16,64": Entry(
        "default", ("stages=[plan]", "hydra.sweep.dir={ws}/sweep")),  # each job plans instead of training
    "python -m lora_llava --config-dir ./my_conf recipe=my_domain": Entry(
        "slow", TINY + LEAN + ("data.path={ws}/my_domain/train.json", "data.image_root={ws}/my_domain/images")),
    "python -m lora_llava recipe=scienceqa stages=[validate] data.path=llava_test_CQM-A.json "
    "data.image_root=images/test": Entry("default", TINY),
    "python -m lora_llava recipe=scienceqa stages=[eval] adapter=PATH": Entry("slow", SQA + LEAN, ADAPTER),
    "python -m lora_llava recipe=scienceqa stages=[eval] model.path=MERGED_DIR": Entry(
        "slow", SQA + LEAN, (("model.path=MERGED_DIR", "model.path={merged}"),)),
    "python -m lora_llava recipe=scienceqa stages=[eval] eval.predictions=answers.jsonl "
    "data.path=llava_test_CQM-A.json data.image_root=images/test": Entry("default", TINY),
    'python -m lora_llava.predict adapter=PATH image=cat.png question="What is on the mat?"': Entry(
        "slow", ("max_new_tokens=4",), ADAPTER),
    "python -m lora_llava.predict adapter=PATH image=cat.png --interactive": Entry(
        "slow", ("max_new_tokens=4",), ADAPTER),  # stdin: a question, /help, /quit
    "python -m lora_llava recipe=scienceqa stages=[export] adapter=PATH export.merge=true": Entry(
        "slow", SQA + ("export.dtype=float32", "hydra.run.dir={ws}/export-run"), ADAPTER, produces="merged"),
    "python -m lora_llava recipe=scienceqa stages=[push] adapter=PATH hub.repo_id=org/name": Entry(
        "slow", SQA + ("hub.dry_run=true",), ADAPTER),
    "python -m lora_llava recipe=scienceqa stages=[push] adapter=PATH hub.dry_run=true": Entry("slow", SQA, ADAPTER),
    "python -m lora_llava recipe=scienceqa stages=[plan]": Entry("default", SQA),  # plans from the data's lengths
    "python -m lora_llava recipe=scienceqa hydra.run.dir=outputs/sqa-1": Entry("slow", SQA + LEAN),
    "python -m lora_llava recipe=scienceqa hydra.run.dir=outputs/sqa-1 train.resume=auto": Entry("slow", SQA + LEAN),
    "torchrun --nproc_per_node 4 -m lora_llava recipe=scienceqa hydra.run.dir=outputs/sqa-ddp": Entry(
        "slow", SQA + LEAN, (("--nproc_per_node 4", "--nproc_per_node 2"),)),  # 2 CPU processes (gloo)
    "accelerate launch --config_file conf/accelerate/ddp.yaml -m lora_llava recipe=scienceqa "
    "hydra.run.dir=outputs/sqa-ddp-acc": Entry(
        "slow", SQA + LEAN, (("--config_file conf/accelerate/ddp.yaml",
                              f"--config_file {ROOT}/conf/accelerate/ddp.yaml --num_processes 2 --cpu"),)),
}


ALIGN = "tests/integration/test_align.py::test_readme_commands"
FAMILIES = "tests/integration/test_families.py::test_smoke_reads_the_images"
GENERATE = "tests/integration/test_readme_generate.py::test_readme_worked_example"
COMPARE = "tests/integration/test_compare.py::test_base_is_near_chance_and_the_adapter_near_one"
SWEEP = "tests/integration/test_sweep.py::test_two_job_sweep_writes_a_summary_ranked_by_accuracy"
SERVE = "tests/integration/test_serving.py::test_transformers_serve_answers_as_predict_does"
PLAN = ("tests/real/test_plan_7b.py::"
        "test_scienceqa_plan_measures_the_real_lengths_and_drops_checkpointing_where_it_fits")
COMMANDS.update({
    "python -m lora_llava recipe=align hydra.run.dir=outputs/align": Entry("elsewhere", by=ALIGN),
    "python -m lora_llava recipe=smoke model.projector=outputs/align/projector": Entry("elsewhere", by=ALIGN),
    "python -m lora_llava recipe=align model=llava-1.5-7b data.source=llava_json data.path=captions.json "
    "data.image_root=images": Entry("elsewhere", by=ALIGN),
    "HF_HUB_OFFLINE=1 python -m lora_llava recipe=smoke model=tiny-next": Entry("elsewhere", by=FAMILIES),
    "HF_HUB_OFFLINE=1 python -m lora_llava recipe=smoke model=tiny-onevision": Entry("elsewhere", by=FAMILIES),
    "python -m benchmarks.families": Entry("elsewhere", by="tests/unit/test_plan_families.py::test_families_table"),
    "export OPENAI_API_KEY=...": Entry("elsewhere", by=GENERATE),
    "python -m lora_llava recipe=instruct stages=[generate] generate.dry_run=true "
    "generate.annotations=my_images/annotations.jsonl generate.image_root=my_images "
    "generate.output=my_images/instruct.json": Entry("elsewhere", by=GENERATE),
    "python -m lora_llava recipe=instruct stages=[generate] hydra.run.dir=outputs/instruct-gen "
    "generate.annotations=my_images/annotations.jsonl generate.image_root=my_images "
    "generate.output=my_images/instruct.json": Entry("elsewhere", by=GENERATE),
    "python -m lora_llava recipe=instruct hydra.run.dir=outputs/instruct-train generate.image_root=my_images "
    "generate.output=my_images/instruct.json": Entry("elsewhere", by=GENERATE),
    "python -m lora_llava recipe=scienceqa stages=[eval] eval.predictions=our_answers.jsonl "
    "eval.judge.arbitrate_with=other_answers.jsonl data.path=llava_test_CQM-A.json data.image_root=images/test":
        Entry("elsewhere", by="tests/integration/test_judge.py::test_arbitration_counts_exact"),
    "python -m lora_llava recipe=smoke train.eval_metric=true train.best_by=accuracy train.patience=3": Entry(
        "slow", ("train.max_steps=4", "train.save_steps=2", "train.eval_steps=2", "train.eval_metric_limit=4",
                 "eval.limit=4", "eval.max_new_tokens=4", "train.report_to=[]")),
    "python -m lora_llava recipe=scienceqa stages=[compare] adapter=PATH": Entry("elsewhere", by=COMPARE),
    "python -m lora_llava recipe=scienceqa stages=[compare] adapter=PATH compare.general.source=jsonl "
    "compare.general.path=general.jsonl": Entry("elsewhere", by=COMPARE),
    "python -m lora_llava -m recipe=smoke train.max_steps=2,48": Entry("elsewhere", by=SWEEP),
    "python -m lora_llava.report multirun/smoke/2026-01-01_12-00-00 outputs/smoke/*": Entry("elsewhere", by=SWEEP),
    "transformers serve outputs/scienceqa/RUN/merged": Entry("elsewhere", by=SERVE),
    "vllm serve outputs/scienceqa/RUN/merged": Entry(
        "not_run", by="vLLM needs a CUDA GPU and is not installed on this project's machines"),
    'python -m lora_llava.predict endpoint=http://localhost:8000 image=cat.png question="What is on the mat?"':
        Entry("elsewhere", by=SERVE),
    "python -m lora_llava recipe=scienceqa stages=[plan] plan.gpu_memory_gb=24 train.batch_size=1":
        Entry("elsewhere", by=PLAN),
    "python -m lora_llava recipe=scienceqa stages=[plan] plan.gpu_memory_gb=24 train.batch_size=1 "
    "plan.from_data=false": Entry("elsewhere", by=PLAN),
    "accelerate launch --config_file conf/accelerate/fsdp.yaml -m lora_llava recipe=smoke stages=[train,eval] "
    "train.batch_size=8 hydra.run.dir=outputs/smoke-fsdp": Entry(
        "elsewhere", by="tests/integration/test_distributed.py::test_fsdp_preset_trains_the_smoke_recipe_like_one_process"),
})


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks: continuation lines joined, comments and repeated spaces dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"\s+", " ", re.sub(r"\s+#.*$", "", line)).strip()
            if line:
                commands.append(line)
    return commands


def readme_yaml(text: str, name: str) -> str:
    """The README's ```yaml block whose first line names `name` (the own-recipe template)."""
    return next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if b.splitlines()[0].endswith(name))


def test_every_readme_command_has_an_entry():
    commands = readme_commands(README.read_text())
    missing = [c for c in commands if c not in COMMANDS]
    assert not missing, f"README commands with no entry in {__file__}'s COMMANDS (say how each runs): {missing}"
    stale = [c for c in COMMANDS if c not in commands]
    assert not stale, f"COMMANDS entries that are no longer in README.md: {stale}"
    for command, entry in COMMANDS.items():
        if entry.full == "elsewhere":  # the named test exists and runs this command
            path, function = entry.by.split("::")
            assert f"def {function}(" in (ROOT / path).read_text(), f"{command}: {entry.by} does not exist"
        if entry.full == "not_run":
            assert entry.by, command


# --- the working directory the commands run in ---------------------------------------------------------------

def _image(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), colour).save(path)


def _problem(i: int, split: str) -> dict:
    image = "image.png" if i % 2 == 0 else None
    return {"question": f"Which colour is shape {i}?", "choices": ["red", "blue"], "answer": i % 2,
            "hint": "", "image": image, "subject": "natural science", "grade": "grade3", "split": split,
            "lecture": "", "solution": "", "task": "closed choice", "topic": "colours", "category": "c",
            "skill": "s"}


def _scienceqa(ws: Path) -> None:
    """A 12-problem ScienceQA in the original release's layout, plus LLaVA's JSON form of its test split."""
    splits = {"train": [str(i) for i in range(8)], "val": ["8", "9"], "test": ["10", "11"]}
    problems = {pid: _problem(int(pid), split) for split, pids in splits.items() for pid in pids}
    (ws / "sqa").mkdir()
    (ws / "sqa/problems.json").write_text(json.dumps(problems))
    (ws / "sqa/pid_splits.json").write_text(json.dumps(splits))
    llava = []
    for pid, raw in problems.items():
        if raw["image"]:
            _image(ws / "sqa/images" / raw["split"] / pid / "image.png", (200, 30, 30))
        if raw["split"] == "test":
            _image(ws / "images/test" / pid / "image.png", (30, 30, 200))
            prompt = f"<image>\nContext: N/A\nQuestion: {raw['question']}\nOptions: (A) red (B) blue"
            llava.append({"id": pid, "image": f"{pid}/image.png", "conversations": [
                {"from": "human", "value": prompt}, {"from": "gpt", "value": "AB"[raw["answer"]]}]})
    (ws / "llava_test_CQM-A.json").write_text(json.dumps(llava))
    (ws / "answers.jsonl").write_text("".join(json.dumps({"question_id": r["id"], "text": "A"}) + "\n"
                                              for r in llava))


def _my_domain(ws: Path) -> None:
    """The README's own-recipe YAML, and a small LLaVA-JSON dataset for it."""
    (ws / "my_conf").mkdir()
    (ws / "my_conf/my_domain.yaml").write_text(readme_yaml(README.read_text(), "my_domain.yaml"))
    records = []
    for i in range(10):
        _image(ws / f"my_domain/images/{i}.png", (20 * i, 100, 100))
        records.append({"id": f"q{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "a square"}]})
    (ws / "my_domain/train.json").write_text(json.dumps(records))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("readme")
    _scienceqa(ws)
    _my_domain(ws)
    _image(ws / "cat.png", (120, 120, 120))
    return ws


# --- running a command ---------------------------------------------------------------------------------------

def _expand(command: str, entry: Entry, values: dict) -> list[str]:
    for old, new in entry.replace:
        command = command.replace(old, new.format(**values))
    args = shlex.split(command) + [e.format(**values) for e in entry.extra]
    return [sys.executable if a == "python" else a for a in args]


def _run(command: str, values: dict, ws: Path, stdin: str = "") -> subprocess.CompletedProcess:
    args = _expand(command, COMMANDS[command], values)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    while args and re.match(r"^[A-Z_]+=", args[0]):  # a leading VAR=value, as the shell reads it
        key, value = args.pop(0).split("=", 1)
        env[key] = value
    if args[0] == "torchrun":
        args = [sys.executable, "-m", "torch.distributed.run", *args[1:]]
    elif args[:2] == ["accelerate", "launch"]:
        args = [sys.executable, "-m", "accelerate.commands.launch", *args[2:]]
    proc = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, input=stdin, timeout=900,
                          check=False)
    assert proc.returncode == 0, f"{command}\n-> {args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _lora_llava_args(args: list[str]) -> tuple[str, list[str], str | None]:
    """(recipe, overrides, --config-dir) of a `python -m lora_llava ...` argument list."""
    rest = args[args.index("lora_llava") + 1:]
    config_dir = None
    if "--config-dir" in rest:
        i = rest.index("--config-dir")
        config_dir, rest = rest[i + 1], rest[:i] + rest[i + 2:]
    recipe = next(a.split("=", 1)[1] for a in rest if a.startswith("recipe="))
    return recipe, [a for a in rest if not a.startswith("recipe=") and a not in ("-m", "--multirun")], config_dir


CONFIG_ONLY = [c for c, e in COMMANDS.items() if e.full == "slow" and "-m lora_llava " in f"{c} "]


@pytest.mark.parametrize("command", CONFIG_ONLY)
def test_slow_commands_pass_every_check_made_before_loading(command, ws, tmp_path, monkeypatch):
    """What the CLI composes for the command (with its substitutions) passes the checks of lora_llava.checks and
    lora_llava.preflight: the eval split exists, adapter= is there, push has a repo id, ..."""
    from lora_llava.checks import check_values
    from lora_llava.config import compose
    from lora_llava.preflight import check_stages
    from lora_llava.run import RunContext

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    values = {"ws": ws, "adapter": adapter, "merged": tmp_path / "merged"}
    recipe, overrides, config_dir = _lora_llava_args(_expand(command, COMMANDS[command], values))
    monkeypatch.chdir(ws)  # relative paths of the README (images/test, ./my_conf) are relative to the cwd
    cfg = compose(recipe, [o for o in overrides if not o.startswith("hydra.")], config_dir)
    check_values(cfg)
    check_stages(cfg, RunContext(run_dir=tmp_path / "run"))


def test_cheap_commands_run_in_full(ws):
    cheap = [c for c, e in COMMANDS.items() if e.full == "default"]
    def staggered(item):
        # Hydra's default run directory has one-second resolution, and a second run in a directory in use is
        # refused (its lock): start them at least a second apart, as a person typing them would.
        time.sleep(1.1 * item[0])
        return _run(item[1], {"ws": ws}, ws)

    with ThreadPoolExecutor(max_workers=3) as pool:  # each is mostly a torch import: overlap them
        procs = dict(zip(cheap, pool.map(staggered, enumerate(cheap))))
    assert "recipe_name: scienceqa" in procs["python -m lora_llava recipe=scienceqa --cfg job"].stdout
    assert sorted(p.name for p in (ws / "sweep").iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert (ws / "outputs").is_dir()  # validate/plan/eval runs wrote their run directories under the cwd
    metrics = next((ws / "outputs/scienceqa").glob("*/eval/metrics.json"))
    assert json.loads(metrics.read_text())["n"] == 2


@pytest.mark.slow  # a dozen tiny training/eval/export runs and two 2-process launches: several minutes
def test_slow_commands_run_in_full(ws):
    values = {"ws": ws, "adapter": ws / "sqa-run/adapter", "merged": ws / "export-run/merged"}
    ordered = sorted((c for c, e in COMMANDS.items() if e.full in ("slow", "setup")),
                     key=lambda c: {"adapter": 0, "merged": 1}.get(COMMANDS[c].produces, 2))
    for command in ordered:
        if COMMANDS[command].full == "setup" and command.startswith("python3 -m venv"):
            subprocess.run(["bash", "-c", command.replace("python3", sys.executable)], cwd=ws, check=True)
            continue
        stdin = "What colour?\n/help\n/quit\n" if "--interactive" in command else ""
        proc = _run(command, values, ws, stdin)
        if "--interactive" in command:
            assert "/image FILE" in proc.stdout
    card = (ws / "sqa-run/checkpoints/README.md").read_text()
    assert "None" not in card and "a tiny random model that lora_llava builds locally" in card
