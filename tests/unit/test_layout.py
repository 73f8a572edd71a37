"""The package tree is the pipeline: one folder per stage, one module per model family, and no module outside
lora_llava/models/ names a family, its transformers classes or its module names (those are the family's to say)."""

import re
from pathlib import Path

import lora_llava

PACKAGE = Path(lora_llava.__file__).parent
FAMILY_TERMS = [
    # classes and modules of transformers' LLaVA families
    "LlavaForConditionalGeneration", "LlavaNext", "LlavaOnevision", "LlavaProcessor", "llava_next",
    "llava_onevision", "CLIPImageProcessor", "Siglip", "Qwen2", "Mistral", "Vicuna",
    # module and config names inside those models
    "multi_modal_projector", "vision_tower", "image_newline", "image_grid_pinpoints", "crop_size",
    "vision_feature", "image_seq_length",
]
FAMILY_NAMES = ["NeXT", "OneVision"]  # case-sensitive: "next" is an ordinary word


def test_one_folder_per_stage_and_one_module_per_family():
    for folder in ("models", "data", "train", "eval", "export"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    for module in ("base", "llava", "llava_next", "llava_onevision", "families", "load", "tiny"):
        assert (PACKAGE / "models" / f"{module}.py").is_file(), module


def test_no_module_outside_the_model_layer_names_a_family():
    pattern = re.compile("|".join(map(re.escape, FAMILY_TERMS)), re.IGNORECASE)
    names = re.compile("|".join(map(re.escape, FAMILY_NAMES)))
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "models") in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) or names.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "family names outside lora_llava/models/:\n" + "\n".join(offenders)


def test_the_check_would_catch_a_family_name(tmp_path):
    pattern = re.compile("|".join(map(re.escape, FAMILY_TERMS)), re.IGNORECASE)
    assert pattern.search('skip = ["vision_tower", "multi_modal_projector"]')
    assert pattern.search("from transformers import LlavaForConditionalGeneration")
    assert not pattern.search("from lora_llava.models.families import family_for_processor")


def test_every_project_import_resolves():
    """Imports inside functions (lazy, so the CLI starts fast) are not run by a plain import of the module: a name
    moved by a refactor breaks only the path that reaches it (the GPU benchmarks did, after the family split).
    Every `from lora_llava/benchmarks/tests... import name` in the tree must name something that exists."""
    import ast
    import importlib

    root = PACKAGE.parent
    broken = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(root / "benchmarks").glob("*.py"), *(root / "tests").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in ("lora_llava", "benchmarks", "tests")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        broken.append(f"{path.relative_to(root)}:{node.lineno}: {node.module}.{alias.name}")
    assert not broken, "\n".join(broken)
