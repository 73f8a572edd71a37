"""ScienceQA for real (../shared/data): LLaVA's test JSON, the original release's problems, the real LLaVA-1.5
processor. Skipped when ../shared/data is absent."""

import json
import subprocess
import sys

import pytest

from lora_llava.config import compose
from lora_llava.data import load_splits
from lora_llava.data.collate import IGNORE_INDEX, Collator
from lora_llava.data.samples import SampleError, Turn
from lora_llava.data.screen import TooManyRejected, apply_skip_policy, screen
from lora_llava.errors import EXIT_CODE

pytestmark = pytest.mark.real

# In the 1,773-problem copy these four hints differ from the original release (a Punnett-square description is
# appended), so their prompts cannot match LLaVA's file.
HINT_DIFFERS = {"42", "209", "600", "1714"}


@pytest.fixture(scope="module")
def sqa(shared_data):
    return shared_data / "scienceqa"


@pytest.fixture(scope="module")
def processor(shared_data):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(shared_data / "llava-1.5-7b-hf")


def llava_cfg(sqa, *overrides):
    """The scienceqa recipe's data config (max_length 2048, ...) on LLaVA's test JSON and the shared images."""
    return compose("scienceqa", [f"data.path={sqa / 'llava_test_CQM-A.json'}",
                                 f"data.image_root={sqa / 'images' / 'test'}", *overrides]).data


@pytest.fixture(scope="module")
def llava_test(sqa):
    return load_splits(llava_cfg(sqa))["test"]


def test_llava_json_counts_and_missing_images(sqa, llava_test, processor, tmp_path):
    assert len(llava_test) == 4241
    with_image = [s for s in llava_test if s.images]
    assert len(with_image) == 2017 and all(s.meta["has_image"] for s in with_image)
    assert sum(s.meta.get("answer_letter") == s.answer for s in llava_test) == 4241
    screened = screen(with_image, llava_cfg(sqa), processor, "test")  # what on_error=skip does, step 1
    kept = apply_skip_policy(screened, llava_cfg(sqa, "data.on_error=skip", "data.max_skip_fraction=0.8"), tmp_path)
    assert len(kept) == 500  # every shared image resolves
    rejected = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1517 and all(r["reason"].startswith("image file not found") for r in rejected)
    assert {r["id"] for r in rejected} | {s.id for s in kept} == {s.id for s in with_image}
    with pytest.raises(TooManyRejected, match="1517 of 2017 test samples"):  # the default max_skip_fraction
        apply_skip_policy(screened, llava_cfg(sqa, "data.on_error=skip"), tmp_path / "default")


def test_original_release_renders_llava15_prompts_char_for_char(sqa, llava_test):
    cfg = compose("scienceqa", [f"data.path={sqa / 'problems_pid1-1773_think-scienceqa.json'}",
                                f"data.scienceqa.pid_splits={sqa / 'pid_splits.json'}"]).data
    ours = {s.id: s for s in load_splits(cfg)["test"]}
    assert len(ours) == 361
    theirs = {s.id: s for s in llava_test}
    differ = {pid for pid, s in ours.items() if s.turns[0].text != theirs[pid].turns[0].text}
    assert differ == HINT_DIFFERS
    assert all(s.answer == theirs[pid].answer for pid, s in ours.items())
    # Meta parsed back from LLaVA's prompts (no problems.json given) agrees with the original problems.
    for pid, s in ours.items():
        parsed = theirs[pid].meta
        assert (parsed["choices"], parsed["answer_index"]) == (s.meta["choices"], s.meta["answer_index"])
        assert bool(parsed["hint"]) == bool(s.meta["hint"]) and parsed["has_image"] == s.meta["has_image"]
    assert all(s.meta["subject"] and s.meta["grade"].startswith("grade") for s in ours.values())


def test_real_processor_image_tokens_labels_and_no_truncation(sqa, llava_test, processor):
    image_sample = next(s for s in llava_test if s.images)
    text_sample = next(s for s in llava_test if not s.images)
    collator = Collator(processor, max_length=2048, image_root=sqa / "images" / "test")
    batch = collator([image_sample, text_sample])
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert (batch["input_ids"][0] == image_id).sum() == 576
    assert batch["pixel_values"].shape == (1, 3, 336, 336)
    for row, sample in enumerate((image_sample, text_sample)):
        supervised = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX]
        assert processor.tokenizer.decode(supervised).replace(" ", "") == f"{sample.answer}</s>"
    # A sample longer than max_length is refused whole: never cut through its 576 image tokens.
    long = type(image_sample)(image_sample.id, [Turn("user", image_sample.turns[0].text + " more" * 1500),
                                                image_sample.turns[1]], image_sample.images)
    with pytest.raises(SampleError, match=f"'{image_sample.id}'.*exceed data.max_length=2048"):
        collator([long])


@pytest.mark.slow  # about 30 s: a fresh interpreter tokenizes all 4,241 questions with the real processor
def test_cli_validate_prints_the_report(sqa, shared_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lora_llava", "recipe=scienceqa", "stages=[validate]", "data.source=llava_json",
         f"data.path={sqa / 'llava_test_CQM-A.json'}", f"data.image_root={sqa / 'images' / 'test'}",
         f"model.path={shared_data / 'llava-1.5-7b-hf'}", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=600, check=False)
    # 500 of the test images are shared: a run (data.on_error=raise) would stop, so validate says so and exits
    # non-zero, after writing the whole report.
    assert proc.returncode == EXIT_CODE, proc.stderr[-3000:]
    assert "a run would stop on this data" in proc.stderr and "1517 bad samples" in proc.stderr
    assert "| test | 4241 | 2017 | 2224 | 1517 |" in proc.stdout
    report = json.loads((tmp_path / "data_report.json").read_text())["splits"]["test"]
    assert report["tokens"]["max"] <= 2048 and report["kept"] == 2724
    assert len((tmp_path / "data_rejected.jsonl").read_text().splitlines()) == 1517
