"""Protocol compatibility with `transformers serve` (transformers' own OpenAI-compatible server) serving the
tiny LLaVA on CPU: our client, streamed and not, with text and with image messages."""

import pytest
from PIL import Image

from lora_llava.endpoint.client import Endpoint
from lora_llava.endpoint.messages import user_message
from tests.conftest import smoke_config
from tests.servers import servable_tiny_llava, transformers_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir = servable_tiny_llava(tmp_path_factory.mktemp("serve") / "tiny-llava")
    with transformers_serve(model_dir) as url:
        yield url, str(model_dir)


def client(served, tmp_path, stream: bool) -> Endpoint:
    url, model = served
    cfg = smoke_config(f"endpoint.base_url={url}", f"endpoint.model={model}", "endpoint.api_key_env=null",
                       "endpoint.temperature=0.0", f"endpoint.stream={str(stream).lower()}", "endpoint.timeout=120")
    return Endpoint(cfg.endpoint, tmp_path / f"cache-{stream}.jsonl")


def test_text_and_image_messages_streamed_and_not(served, tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(image)
    question = "What color is the shape?"
    answers = {}
    for stream in (False, True):
        endpoint = client(served, tmp_path, stream)
        answers[stream] = [endpoint.complete([user_message(question)], 6),
                           endpoint.complete([user_message(question, image)], 6)]
    for text_only, with_image in answers.values():
        assert text_only.text and with_image.text and text_only.output_tokens > 0
        # The image reached the model through the processor: 16 image tokens (4x4 patches) more in the prompt.
        assert with_image.input_tokens - text_only.input_tokens >= 16
    # Greedy decoding: the streamed answer is the same text as the plain one.
    assert [a.text for a in answers[True]] == [a.text for a in answers[False]]
    assert [a.input_tokens for a in answers[True]] == [a.input_tokens for a in answers[False]]
