"""The configs ship inside a built wheel: the package composes recipes when installed away from the checkout."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_carries_conf_and_recipes(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q",
                    "-w", str(wheel_dir)], check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("lora_llava-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    script = (f"import sys; sys.path.insert(0, {str(target)!r}); sys.argv = ['lora-llava', 'recipe=scienceqa', "
              "'--cfg', 'job']; import lora_llava, lora_llava.config as c; "
              f"assert lora_llava.__file__.startswith({str(target)!r}), lora_llava.__file__; "
              "print('CONF', c.config_dirs()[0]); import lora_llava.__main__ as m; m.main()")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"CONF {target}" in proc.stdout
    assert "llava-hf/llava-1.5-7b-hf" in proc.stdout and "method: nf4" in proc.stdout
