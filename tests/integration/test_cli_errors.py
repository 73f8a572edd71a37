"""Expected errors (bad config, bad data, a missing file) end in one line on stderr and exit code 2, with no
traceback unless LORA_LLAVA_DEBUG=1; every stage's needs are checked before the first stage runs; --help is
real help. The real CLI runs in subprocesses."""

import os
import subprocess
import sys

import pytest

from lora_llava.errors import DEBUG_ENV, EXIT_CODE


def _cli(*args, module="lora_llava", cwd=None, **env):
    env = {**{k: v for k, v in os.environ.items() if k != DEBUG_ENV}, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd, check=False)


def _one_line_error(proc, *needles, prog="lora_llava") -> str:
    assert proc.returncode == EXIT_CODE, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr
    assert f"{DEBUG_ENV}=1" in errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "stage train" not in proc.stdout + proc.stderr  # refused before anything ran
    return errors[0]


def test_typo_and_added_key_give_the_same_one_line_error():
    typo = _one_line_error(_cli("recipe=smoke", "peft.rnk=8"), "'peft.rnk'", "lora_alpha")
    added = _one_line_error(_cli("recipe=smoke", "+peft.rnk=8"), "'peft.rnk'")
    assert typo == added


def test_printing_the_config_checks_it_as_a_run_would(tmp_path):
    """`--cfg job` runs nothing, but a config it prints without complaint must be one a run accepts."""
    _one_line_error(_cli("recipe=smoke", "+train.bogus=1", "--cfg", "job"), "'train.bogus'")
    _one_line_error(_cli("recipe=smoke", "--cfg", "job", "train.batch_size=0"), "train.batch_size=0")
    (tmp_path / "mine.yaml").write_text("defaults:\n  - smoke\n  - _self_\npeft:\n  rnk: 8\n")
    _one_line_error(_cli("recipe=mine", "--config-dir", str(tmp_path), "--cfg", "job"), "'peft.rnk'")
    _one_line_error(_cli("-m", "recipe=smoke", "peft.r=8,16", "--cfg", "job"), "--cfg prints one composed config")
    printed = _cli("recipe=smoke", "--cfg", "job", "train.batch_size=3")
    assert printed.returncode == 0 and "batch_size: 3" in printed.stdout


def test_a_bad_key_or_value_names_the_file_or_override_it_came_from(tmp_path):
    (tmp_path / "peft").mkdir()
    (tmp_path / "peft" / "mine.yaml").write_text("r: 8\nrnk: 4\n")
    (tmp_path / "typed.yaml").write_text("defaults:\n  - smoke\n  - _self_\ntrain:\n  batch_size: abc\n")
    _one_line_error(_cli("--config-dir", str(tmp_path), "recipe=smoke", "peft=mine"), "'peft.rnk'",
                    f"set in {tmp_path / 'peft' / 'mine.yaml'}")
    _one_line_error(_cli("--config-dir", str(tmp_path), "recipe=typed"), "train.batch_size",
                    f"set in {tmp_path / 'typed.yaml'}")
    _one_line_error(_cli("recipe=smoke", "train.batch_size=abc"),
                    "set on the command line: train.batch_size=abc")
    _one_line_error(_cli("recipe=smoke", "peft.rnk=8"), "set on the command line: peft.rnk")


@pytest.mark.parametrize(("args", "needles"), [
    (("train.batch_size=0",), ("train.batch_size=0",)),
    (("train.learning_rate=abc",), ("train.learning_rate",)),
    (("stages=[]",), ("stages is empty",)),
    (("model=llava-2",), ("model/llava-2", "tiny")),
    (("stages=[train,eval]", "eval.split=nope"), ("eval.split='nope'", "train, validation, test")),
    (("stages=[export]",), ("adapter=PATH",)),
    (("stages=[train,eval]", "data=jsonl", "data.path=/no/such/train.jsonl"), ("/no/such/train.jsonl",)),
])
def test_config_that_cannot_run_stops_in_one_line_before_any_stage(args, needles):
    _one_line_error(_cli("recipe=smoke", *args), *needles)


def test_what_cannot_be_downloaded_offline_is_one_line():
    _one_line_error(_cli("recipe=smoke", "stages=[plan]", "model.path=nobody/no-such-model"),
                    "model.path=nobody/no-such-model: cannot load it")
    _one_line_error(_cli("recipe=smoke", "stages=[train,eval]", "data=hf", "data.path=nobody/no-such-data"),
                    "data.path=nobody/no-such-data: cannot load it")


def test_unknown_recipe_lists_the_shipped_ones():
    _one_line_error(_cli("recipe=nope"), "recipe 'nope' not found", "smoke")


def test_data_in_another_encoding_names_file_and_line(tmp_path):
    data = tmp_path / "train.csv"
    data.write_bytes("question,answer\nWhat is it?,a cat\nQuel café ?,un café\n".encode("latin-1"))
    _one_line_error(_cli("recipe=smoke", "stages=[train,eval]", "data=jsonl", f"data.path={data}",
                         "eval.split=validation"), f"{data}, line 3", "not UTF-8")


def test_debug_switch_shows_the_traceback():
    proc = _cli("recipe=smoke", "train.batch_size=0", **{DEBUG_ENV: "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_validate_exits_non_zero_when_training_would_stop(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What?", "answer": "a"}\n' * 9 + '{"question": "Why?", "answer": ""}\n')
    proc = _cli("recipe=smoke", "stages=[validate]", "data=jsonl", f"data.path={data}", "data.val_fraction=0",
                f"hydra.run.dir={tmp_path / 'run'}")
    _one_line_error(proc, "a run would stop", "data.on_error=raise")
    assert (tmp_path / "run" / "data_report.md").is_file()  # the report is written first


def test_help_lists_recipes_groups_with_options_and_stages():
    proc = _cli("--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    from lora_llava.config import STAGES, list_recipes

    assert {"custom_image_qa", "scienceqa", "smoke"} <= set(list_recipes())
    for text in (", ".join(list_recipes()), "int8, nf4, none", "model", "llava-1.5-7b", *STAGES, DEBUG_ENV):
        assert text in out, text


def test_predict_help_is_real_help_and_its_errors_are_one_line(tmp_path):
    proc = _cli("--help", module="lora_llava.predict")
    assert proc.returncode == 0 and "image=FILE" in proc.stdout and "/image FILE" in proc.stdout
    _one_line_error(_cli(f"adapter={tmp_path}/adapter", "question=hi", module="lora_llava.predict"),
                    "recipe=NAME", prog="lora_llava.predict")
    _one_line_error(_cli("recipe=smoke", f"adapter={tmp_path}", "image=nope.png", "question=hi",
                         module="lora_llava.predict"), "image=nope.png: no such file", prog="lora_llava.predict")


def test_importing_the_stack_prints_no_optional_kernel_warning():
    """bitsandbytes asks CPUs with AVX512-BF16 to `pip install kernels` (a Hub download) on import; a run of
    ours must not open with that line (on other CPUs this passes without the filter being needed)."""
    proc = subprocess.run([sys.executable, "-c", "import lora_llava, peft, bitsandbytes"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kernels-community" not in proc.stderr + proc.stdout
