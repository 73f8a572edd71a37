"""Ask a fine-tuned model about an image:

    python -m lora_llava.predict adapter=PATH image=FILE question="What is shown?"
    python -m lora_llava.predict adapter=PATH image=FILE interactive=true      # a conversation on stdin
    python -m lora_llava.predict endpoint=http://localhost:8000 image=FILE question="What is shown?"

Its own keys: `image=FILE` (optional; text-only questions work too), `question="..."`, `interactive=true` (or
`--interactive`; also the default without a question), `max_new_tokens=N` (default 256), and `endpoint=URL`
(with `served_model=NAME`, default: the first model the server lists) to ask a served model (`transformers
serve`, vLLM: any OpenAI-compatible server) the same way instead of loading one. Everything else is
a config override as for `python -m lora_llava`: `recipe=NAME` picks the recipe the adapter was trained with
and `model.path=DIR` a merged model. Without `recipe=`, the config is the adapter's own run
(<run>/.hydra/config.yaml beside <run>/adapter), with `key=value` overrides on top.
In interactive mode `/image FILE` starts over with another picture, `/reset` starts over, `/quit` ends,
`/help` lists these. Expected errors print one line (LORA_LLAVA_DEBUG=1 shows the full traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Sample, Turn
from lora_llava.errors import ConfigError, run_entry

COMMANDS = {"/image FILE": "start over about another picture", "/reset": "start over", "/help": "this list",
            "/quit": "end (also Ctrl-D)"}

OWN_KEYS = ("image", "question", "interactive", "max_new_tokens", "endpoint", "served_model")


def split_args(argv: list[str]) -> tuple[dict, list[str]]:
    """(our own keys, config overrides)."""
    own = {"image": None, "question": None, "interactive": False, "max_new_tokens": 256, "endpoint": None,
           "served_model": None}
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if arg in ("--interactive", "-i"):
            own["interactive"] = True
        elif sep and key in OWN_KEYS:
            own[key] = value.lower() in ("true", "1", "yes") if key == "interactive" else value
        else:
            overrides.append(arg)
    own["max_new_tokens"] = int(own["max_new_tokens"])
    return own, overrides


def load_config(overrides: list[str]):
    """The recipe's config (`recipe=NAME`), else the adapter's run config; overrides applied either way."""
    from omegaconf import OmegaConf

    from lora_llava.checks import check_values
    from lora_llava.config import Config, compose

    recipe = next((a.split("=", 1)[1] for a in overrides if a.startswith("recipe=")), None)
    rest = [a for a in overrides if not a.startswith("recipe=")]
    if recipe:
        cfg = compose(recipe, rest)
    else:
        adapter = next((a.split("=", 1)[1] for a in rest if a.startswith("adapter=")), None)
        run_config = Path(adapter).parent / ".hydra" / "config.yaml" if adapter else None
        if run_config is None or not run_config.is_file():
            raise ConfigError("name the recipe the model was trained with (recipe=NAME), or give "
                     "adapter=<run>/adapter of a run made by `python -m lora_llava` (its config is read from "
                     "<run>/.hydra/config.yaml)")
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_config),
                              OmegaConf.from_dotlist(rest))
    check_values(cfg)
    return cfg


def answer(model, processor, cfg, turns: list[Turn], image: str | None, max_new_tokens: int) -> str:
    from lora_llava.eval.generate import generate

    sample = Sample(image or "question", turns, [image] if image else [])
    return generate(model, processor, [sample], batch_size=1, max_new_tokens=max_new_tokens,
                    system_prompt=cfg.data.system_prompt, desc="answering")[0]


def chat(reply, image: str | None, first: str | None = None, read=None, write=print) -> None:
    """A conversation: `first`, then each line read, is the next user turn; earlier turns stay in the
    prompt. `reply(turns, image)` answers."""
    read = read or input  # looked up at call time, so a replaced builtins.input (tests, wrappers) is used
    turns: list[Turn] = []
    pending = [first] if first else []
    while True:
        try:
            line = pending.pop() if pending else read("you> ").strip()
        except EOFError:
            return
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/"):
            image, turns = command(line, image, turns, write)
            continue
        if not line:
            continue
        turns.append(Turn("user", f"{IMAGE_PLACEHOLDER}\n{line}" if image and not turns else line))
        text = reply(turns, image)
        turns.append(Turn("assistant", text))
        write(text)


def local_reply(own: dict, overrides: list[str]):
    """reply(turns, image) from the adapter (or model.path) loaded in this process."""
    from lora_llava.models.load import load_adapted

    cfg = load_config(overrides)
    model, processor = load_adapted(cfg, cfg.adapter)
    return lambda turns, image: answer(model, processor, cfg, turns, image, own["max_new_tokens"])


def endpoint_reply(own: dict, overrides: list[str]):
    """reply(turns, image) from a served model; the system prompt is the config's when one is named."""
    from lora_llava.eval.remote import Served

    system = load_config(overrides).data.system_prompt if overrides else None
    served = Served(own["endpoint"], own["served_model"])  # one client for the whole conversation
    return lambda turns, image: served.reply(turns, image, own["max_new_tokens"], system)


def command(line: str, image: str | None, turns: list[Turn], write) -> tuple[str | None, list[Turn]]:
    """An interactive /command: (the image, the turns) after it. A missing /image file is said at once."""
    name, _, arg = line.partition(" ")
    if name == "/image" and arg.strip():
        if not Path(arg.strip()).is_file():
            write(f"(no such file: {arg.strip()}; still about {image or 'no image'})")
            return image, turns
        image = arg.strip()
    elif name != "/reset":
        write("\n".join(f"  {c:<12} {what}" for c, what in COMMANDS.items()))
        return image, turns
    write(f"(new conversation{f' about {image}' if image else ''})")
    return image, []


def _main(argv: list[str]) -> None:
    if any(a in ("--help", "-h") for a in argv):
        print(__doc__.strip())
        return
    own, overrides = split_args(argv)
    if own["image"] and not Path(own["image"]).is_file():
        raise ConfigError(f"image={own['image']}: no such file")
    reply = endpoint_reply(own, overrides) if own["endpoint"] else local_reply(own, overrides)
    if own["question"] and not own["interactive"]:
        text = f"{IMAGE_PLACEHOLDER}\n{own['question']}" if own["image"] else own["question"]
        print(reply([Turn("user", text)], own["image"]))
        return
    chat(reply, own["image"], first=own["question"])


def main(argv: list[str] | None = None) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lora_llava.checks import describe_config_error

    argv = sys.argv[1:] if argv is None else argv
    run_entry("lora_llava.predict", lambda: _main(argv), (HydraException, OmegaConfBaseException),
              describe_config_error)


if __name__ == "__main__":
    main()
