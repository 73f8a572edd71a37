"""The merged folder is served by a real engine as it is: `transformers serve <run>/merged` on localhost answers
the smoke questions exactly as `predict` answers them from the adapter, through `predict endpoint=URL`.
And export.vllm_lora=true writes the language-model LoRA in vLLM's module names, or says why it cannot."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lora_llava.checks import check_values
from lora_llava.data import load_splits
from lora_llava.errors import ConfigError
from lora_llava.eval import predict
from lora_llava.run import run
from tests.conftest import smoke_config
from tests.servers import transformers_serve

N_QUESTIONS = 8


@pytest.fixture(scope="module")
def merged_smoke(trained_smoke, tmp_path_factory):
    """The smoke adapter merged in float32 (the tiny model's own dtype), as `stages=[export]` writes it."""
    out = tmp_path_factory.mktemp("merged_run")
    cfg = smoke_config("stages=[export]", f"adapter={trained_smoke.run_dir / 'adapter'}", "export.merge=true",
                       "export.dtype=float32")
    run(cfg, out)
    return out / "merged"


def test_merged_folder_has_what_servers_read(merged_smoke):
    from transformers import AutoProcessor, GenerationConfig

    names = {p.name for p in merged_smoke.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "chat_template.jinja",
            "processor_config.json", "tokenizer.json"} <= names
    generation = GenerationConfig.from_pretrained(merged_smoke)
    assert generation.eos_token_id is not None and generation.pad_token_id is not None
    # the chat template renders the prompt the model was trained on, image token included
    processor = AutoProcessor.from_pretrained(merged_smoke)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the shape?"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        "USER: <image>\nWhere is the shape? ASSISTANT:"


def test_transformers_serve_answers_as_predict_does(trained_smoke, merged_smoke, tmp_path, capsys):
    """`transformers serve` is started for real (a subprocess on 127.0.0.1) on the merged tiny model."""
    pytest.importorskip("openai", reason="predict endpoint=URL needs `pip install 'lora_llava[endpoint]'`")
    questions = []
    for sample in load_splits(smoke_config().data)["test"][:N_QUESTIONS]:
        image = tmp_path / f"{sample.id}.png"
        sample.images[0].save(image)
        questions.append((str(image), sample.turns[0].text.split("\n", 1)[1]))
    adapter = trained_smoke.run_dir / "adapter"
    # the reply function `python -m lora_llava.predict recipe=smoke adapter=...` uses, loaded once
    local = predict.local_reply({"max_new_tokens": 8}, ["recipe=smoke", f"adapter={adapter}"])
    expected = [local([predict.Turn("user", f"<image>\n{q}")], image) for image, q in questions]
    assert sum(bool(a) for a in expected) == N_QUESTIONS
    served = []
    with transformers_serve(merged_smoke, tmp_path / "serve.log") as url:
        for image, question in questions:
            predict.main([f"endpoint={url}", f"image={image}", f"question={question}", "max_new_tokens=8"])
            served.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert served == expected


def test_vllm_lora_folder_for_an_adapter_without_projector(tmp_path):
    cfg = smoke_config("stages=[train,export]", "peft.train_projector=false", "export.vllm_lora=true",
                       "train.max_steps=2", "train.eval_steps=null")
    run(cfg, tmp_path)
    ours = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "vllm_lora" / "adapter_model.safetensors")
    assert len(theirs) == len(ours) and ours
    renamed = {k.replace("base_model.model.model.language_model.", "base_model.model.language_model.model."): v
               for k, v in ours.items()}
    assert renamed.keys() == theirs.keys()
    assert all(torch.equal(renamed[k], theirs[k]) for k in theirs)
    assert all(k.startswith("base_model.model.language_model.model.layers.") for k in theirs)
    config = json.loads((tmp_path / "vllm_lora" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(cfg.peft.target_modules) and not config["modules_to_save"]
    assert config["r"] == cfg.peft.r


def test_vllm_lora_with_a_trained_projector_is_refused_before_training():
    with pytest.raises(ConfigError, match="export.vllm_lora=true is impossible with peft.train_projector=true"):
        check_values(smoke_config("export.vllm_lora=true"))
