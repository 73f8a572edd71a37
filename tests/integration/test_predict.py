"""`python -m lora_llava.predict` on the smoke adapter: one answer; a conversation that keeps its history."""

import builtins

from lora_llava.data import load_splits
from lora_llava.eval import predict
from lora_llava.eval.generate import generate
from tests.conftest import smoke_config


def test_one_question_prints_the_models_answer(trained_smoke, tmp_path, capsys):
    sample = load_splits(smoke_config().data)["test"][0]
    sample.images[0].save(tmp_path / "shape.png")
    question = sample.turns[0].text.split("\n", 1)[1]  # the text after "<image>\n"
    adapter = trained_smoke.run_dir / "adapter"
    image = tmp_path / "shape.png"
    predict.main(["recipe=smoke", f"adapter={adapter}", f"image={image}", f"question={question}",
                  "max_new_tokens=8"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    # the answer of the trained model to the same picture and question, reloaded from the adapter folder
    expected = generate(trained_smoke.model, trained_smoke.processor, [sample], max_new_tokens=8)
    assert printed == expected[0] and printed


def test_interactive_mode_keeps_the_conversation(trained_smoke, tmp_path, monkeypatch, capsys):
    load_splits(smoke_config().data)["test"][1].images[0].save(tmp_path / "shape.png")
    lines = iter(["Where is the shape?", "/reset", "What color is the shape?", "Where is the shape?",
                  "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    seen = []

    def spy(model, processor, samples, **kwargs):
        seen.append([(t.role, t.text) for t in samples[0].turns])
        return generate(model, processor, samples, **kwargs)

    monkeypatch.setattr("lora_llava.eval.generate.generate", spy)
    adapter = trained_smoke.run_dir / "adapter"
    predict.main(["recipe=smoke", f"adapter={adapter}", f"image={tmp_path / 'shape.png'}",
                  "max_new_tokens=8"])
    assert len(seen) == 3
    assert seen[0] == [("user", "<image>\nWhere is the shape?")]
    assert seen[1] == [("user", "<image>\nWhat color is the shape?")]  # /reset dropped the first exchange
    # the second question of a conversation is asked after the first exchange, image placeholder only once
    assert seen[2][0] == seen[1][0] and seen[2][1][0] == "assistant"
    assert seen[2][2] == ("user", "Where is the shape?")
    assert "(new conversation about" in capsys.readouterr().out
