"""The validate stage: processor only (no model), every sample screened, a report printed and written."""

import json

from PIL import Image

from lora_llava.run import run
from tests.conftest import smoke_config


def team_data(tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "red.png")
    rows = [{"image": "red.png", "question": "Color?", "answer": "red"},
            {"image": "red.png", "question": "Color again?", "answer": "red"},
            {"image": "gone.png", "question": "Color?", "answer": "blue"},
            {"image": "", "question": "Is 2 even?", "answer": "yes"},
            {"image": "red.png", "question": "Color?", "answer": ""}]
    (tmp_path / "team_train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "team_train.jsonl"


def test_validate_stage_reports_without_loading_a_model(tmp_path, capsys):
    path = team_data(tmp_path)
    cfg = smoke_config("stages=[validate]", "data.source=jsonl", f"data.path={path}", f"data.image_root={tmp_path}",
                       "data.val_fraction=0", "data.on_error=skip", "data.max_skip_fraction=0.5")
    ctx = run(cfg, tmp_path / "run")
    assert ctx.model is None  # the processor alone was loaded
    train = json.loads((tmp_path / "run" / "data_report.json").read_text())["splits"]["train"]
    assert (train["samples"], train["with_image"], train["text_only"], train["rejected"]) == (5, 4, 1, 2)
    assert train["image_width"]["max"] == 40 and train["image_height"]["min"] == 30
    assert train["tokens"]["min"] > 16  # image tokens are counted
    reasons = train["rejected_by_reason"]
    assert reasons["image file not found under data.image_root=" + str(tmp_path.resolve())]["examples"] == ["team_train:3"]
    assert any("empty or missing answer" in k for k in reasons)
    rejected = (tmp_path / "run" / "data_rejected.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in rejected] == ["team_train:3", "team_train:5"]
    out = capsys.readouterr().out
    assert "| train | 5 | 4 | 1 | 2 |" in out and "data.on_error=skip would leave out 2 of 5 (40.0%)" in out
    assert (tmp_path / "run" / "data_report.md").read_text() in out
