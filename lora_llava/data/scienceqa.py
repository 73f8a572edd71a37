"""ScienceQA (Lu et al., NeurIPS 2022) from each form it comes in, as Samples in a LLaVA prompt format.

`data.path` (or `data.data_files`) decides the form:
- the Hub layout (`derek-thomas/ScienceQA`: image, question, choices, answer index, hint, ... lecture, solution),
  by Hub id, a local folder of its parquet/arrow files, or a `save_to_disk` folder;
- the original release: a folder with `problems.json` (or the problems file itself) + `pid_splits.json` beside it;
  images are `<data.image_root>/<split>/<pid>/image.png` (data.image_root defaults to the `images` folder beside);
- LLaVA's converted JSON (`llava_test_CQM-A.json`, ...): prompts used as written, images under data.image_root;
  `data.scienceqa.problems` adds the original metadata (subject, grade, ...), otherwise it is parsed from the text.
Text-only questions (about half) are kept. Every sample carries the ScienceQA meta the scorers rely on: pid,
choices, answer_index, answer_letter, hint, has_image, and subject/grade/topic/... when the source has them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lora_llava.data.hf import image_refs, open_dataset
from lora_llava.data.llava_json import files_by_split, require_image_root, samples_from_file
from lora_llava.data.samples import Sample, Turn
from lora_llava.data.scienceqa_prompts import Problem, check_format, parse, render
from lora_llava.data.splits import canonical, given_files
from lora_llava.errors import ConfigError, DataError

log = logging.getLogger("lora_llava")

META_FIELDS = ("subject", "grade", "topic", "category", "skill", "lecture", "solution", "task")


def problem_meta(pid: str, raw: dict, problem: Problem, split: str | None) -> dict:
    meta = {"pid": pid, "choices": list(problem.choices), "answer_index": problem.answer,
            "answer_letter": problem.letter, "hint": problem.hint, "has_image": problem.has_image}
    meta.update({k: raw[k] for k in META_FIELDS if raw.get(k) is not None})
    if split:
        meta["split"] = split
    return meta


def problem_sample(pid: str, raw: dict, images: list, fmt: str, split: str | None) -> Sample:
    """One ScienceQA problem (a problems.json entry or a Hub row) rendered in prompt format `fmt`."""
    problem = Problem(str(raw["question"]), list(raw["choices"]), int(raw["answer"]), raw.get("hint") or "",
                      raw.get("lecture") or "", raw.get("solution") or "", bool(images))
    try:
        text, answer = render(problem, fmt)
    except ValueError as err:
        raise DataError(f"ScienceQA problem {pid}: {err}") from None
    return Sample(pid, [Turn("user", text), Turn("assistant", answer)], images,
                  problem_meta(pid, raw, problem, split))


def _starts_with(path: Path, char: str) -> bool:
    with open(path, encoding="utf-8") as f:
        return f.read(4096).lstrip().startswith(char)


def detect_layout(data_cfg) -> tuple[str, Path | None]:
    """("original", problems file) | ("llava_json", None) | ("hub", None) for data.path / data.data_files."""
    files = list(given_files(data_cfg).values()) or ([data_cfg.path] if data_cfg.path else [])
    if not files:
        raise ConfigError("data.path is not set: give the Hub id (derek-thomas/ScienceQA) or a local copy, the "
                         "original release's folder (problems.json, pid_splits.json, images/) or LLaVA's JSON")
    first = Path(files[0])
    if first.is_dir() and (first / "problems.json").is_file():
        return "original", first / "problems.json"
    if first.is_file() and first.suffix in (".json", ".jsonl"):
        return ("original", first) if _starts_with(first, "{") else ("llava_json", None)
    return "hub", None


def load_original(problems_path: Path, data_cfg) -> dict[str, list[Sample]]:
    """problems.json + pid_splits.json (else each problem's own `split`) + images/<split>/<pid>/<image>."""
    problems = json.loads(problems_path.read_text(encoding="utf-8"))
    splits_path = Path(data_cfg.scienceqa.pid_splits or problems_path.parent / "pid_splits.json")
    if splits_path.is_file():
        pid_lists = json.loads(splits_path.read_text(encoding="utf-8"))
    else:
        log.info("no %s: splitting by each problem's own 'split' field", splits_path)
        pid_lists = {}
        for pid, raw in problems.items():
            pid_lists.setdefault(raw["split"], []).append(pid)
    # Only the splits a run can use; pid_splits.json also lists unions (trainval) and mini splits.
    wanted = {"train", "validation", "test", data_cfg.train_split, data_cfg.eval_split, data_cfg.test_split}
    images_dir = problems_path.parent / "images"
    out = {}
    for name, pids in pid_lists.items():
        if canonical(name) not in wanted:
            continue
        present = [pid for pid in pids if pid in problems]
        if len(present) < len(pids):
            log.warning("%d of the %d pids of split %r are not in %s; loaded the other %d", len(pids) - len(present),
                        len(pids), name, problems_path, len(present))
        out[canonical(name)] = [problem_sample(pid, problems[pid], _original_images(pid, problems[pid], name,
                                                                                    data_cfg, images_dir),
                                               data_cfg.prompt_format, problems[pid].get("split", name))
                                for pid in present]
    return out


def _original_images(pid: str, raw: dict, split: str, data_cfg, images_dir: Path) -> list[str]:
    if not raw.get("image"):
        return []
    relative = f"{raw.get('split', split)}/{pid}/{raw['image']}"
    # Under data.image_root the path stays relative (and is checked against escaping it); else it is ours.
    return [relative if data_cfg.image_root else str(images_dir / relative)]


def load_llava(data_cfg) -> dict[str, list[Sample]]:
    """LLaVA's converted ScienceQA JSON; meta from data.scienceqa.problems when given, else parsed from prompts."""
    problems = None
    if data_cfg.scienceqa.problems:
        problems = json.loads(Path(data_cfg.scienceqa.problems).read_text(encoding="utf-8"))
    splits = {split: samples_from_file(path) for split, path in files_by_split(data_cfg).items()}
    for split, samples in splits.items():
        unparsed = sum(not _add_meta(s, problems) for s in samples)
        if unparsed:
            log.warning("%d of %d %s samples: no ScienceQA choices/answer found in the prompt (their meta has only "
                        "pid and has_image)", unparsed, len(samples), split)
    require_image_root(splits, data_cfg)
    return splits


def _add_meta(sample: Sample, problems: dict | None) -> bool:
    raw = problems.get(sample.id) if problems else None
    prompt = sample.turns[0].text if sample.turns else ""
    if raw is not None:
        problem = Problem(raw["question"], list(raw["choices"]), int(raw["answer"]), raw.get("hint") or "",
                          has_image=bool(sample.images))
    else:
        problem = parse(prompt, sample.answer)
    if problem is None:
        sample.meta.update(pid=sample.id, has_image=bool(sample.images))
        return False
    problem.has_image = bool(sample.images)
    sample.meta.update(problem_meta(sample.id, raw or {}, problem, raw.get("split") if raw else None))
    return True


def load_hub(data_cfg) -> dict[str, list[Sample]]:
    """The Hub layout; `pid`/`id` columns become sample ids when present, else `<split>-<row>`."""
    out = {}
    for split, ds in open_dataset(data_cfg).items():
        samples = []
        for i, row in enumerate(ds):
            pid = str(row.get("pid") or row.get("id") or f"{split}-{i}")
            samples.append(problem_sample(pid, row, image_refs(row.get("image")), data_cfg.prompt_format, split))
        out[split] = samples
    return out


def load_scienceqa(data_cfg) -> dict[str, list[Sample]]:
    check_format(data_cfg.prompt_format)
    layout, problems_path = detect_layout(data_cfg)
    if layout == "original":
        return load_original(problems_path, data_cfg)
    if layout == "llava_json":
        return load_llava(data_cfg)
    return load_hub(data_cfg)
