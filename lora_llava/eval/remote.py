"""Ask a served model (any OpenAI-compatible server: `transformers serve`, `vllm serve`) the question `predict`
would ask a local one: the same turns, the image inline as a data URL, greedy decoding. The requests go through
the endpoint client (endpoint/client.py: retries, errors sorted into fatal and transient) with an in-memory
cache only. Needs `pip install 'lora_llava[endpoint]'` (the openai package)."""

from __future__ import annotations

import os
from pathlib import Path

from lora_llava.data.samples import IMAGE_PLACEHOLDER, Turn
from lora_llava.errors import UserError


def to_messages(turns: list[Turn], image: str | None, system_prompt: str | None = None) -> list[dict]:
    """OpenAI chat messages; the turn holding `<image>` carries the image before its text, as the chat template
    of a LLaVA checkpoint places it."""
    from lora_llava.endpoint.messages import image_part

    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in turns:
        if image and IMAGE_PLACEHOLDER in turn.text:
            text = turn.text.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "")
            messages.append({"role": turn.role, "content": [image_part(Path(image)), {"type": "text", "text": text}]})
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


class Served:
    """One served model, asked greedily. `model`: the name the server knows it by (default: the first listed)."""

    def __init__(self, url: str, model: str | None = None):
        from lora_llava.config import EndpointConfig

        base = url.rstrip("/")
        self.url = url
        # Local servers take any key; a hosted one reads OPENAI_API_KEY, as the openai package itself does.
        key_env = "OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else None
        # A person waits at the prompt: two quick retries, then the error.
        self.cfg = EndpointConfig(base_url=base if base.endswith("/v1") else base + "/v1", model=model or "",
                                  api_key_env=key_env, max_concurrency=1, max_retries=2, backoff_base=0.5,
                                  backoff_max=2.0, temperature=0.0)
        self.endpoint = None

    def _connect(self):
        from lora_llava.endpoint.client import Endpoint

        if self.endpoint is None:
            endpoint = Endpoint(self.cfg, None)
            if not self.cfg.model:
                self.cfg.model = self._ask(lambda: endpoint.client.models.list().data[0].id)
            self.endpoint = endpoint
        return self.endpoint

    def _ask(self, request):
        import openai

        from lora_llava.endpoint.client import FATAL_STATUS, EndpointError, RequestFailed

        try:
            return request()
        except openai.APIConnectionError as err:  # listing the served models, before any request
            raise UserError(f"endpoint={self.url}: cannot connect ({err}); is the server running?") from None
        except RequestFailed as err:
            hint = "is the server running?" if err.status is None else "see the server's log"
            raise UserError(f"endpoint={self.url}: no answer ({err}); {hint}") from None
        except EndpointError as err:
            raise UserError(f"endpoint={self.url}: the server answered HTTP {err.status}: "
                            f"{FATAL_STATUS[err.status]} (check the URL, served_model= and OPENAI_API_KEY)") from None
        except openai.APIStatusError as err:
            raise UserError(f"endpoint={self.url}: the server answered {err.status_code}: {err.message}") from None

    def reply(self, turns: list[Turn], image: str | None, max_new_tokens: int, system_prompt: str | None = None) -> str:
        endpoint = self._connect()
        messages = to_messages(turns, image, system_prompt)
        return self._ask(lambda: endpoint.complete(messages, max_new_tokens)).text.strip()

