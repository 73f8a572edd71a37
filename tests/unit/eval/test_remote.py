"""`predict endpoint=URL` through the endpoint client, against a scripted Chat Completions server on localhost:
what it sends (the image as a data URL, greedy decoding) and the one-line errors a person at the prompt sees."""

import base64
import io

import pytest
from PIL import Image

from lora_llava.eval import predict
from tests.servers import free_port, reply, scripted_server, status


def ask(url: str, capsys, *extra: str) -> tuple[str, str]:
    """(stdout's last line, stderr) of one predict question; a refused run's SystemExit is caught."""
    try:
        predict.main([f"endpoint={url}", "served_model=scripted", "max_new_tokens=5", *extra])
    except SystemExit as err:
        assert err.code != 0
    out, err = capsys.readouterr()
    return (out.strip().splitlines() or [""])[-1], err


def test_the_question_and_image_reach_the_server_and_its_answer_is_printed(tmp_path, capsys):
    pytest.importorskip("openai")
    picture = Image.new("RGB", (12, 8), (200, 10, 10))
    picture.save(tmp_path / "shape.bmp")  # not a format servers take: sent re-encoded as PNG
    with scripted_server(lambda body, n: reply("red")) as server:
        out, _ = ask(server.url, capsys, f"image={tmp_path / 'shape.bmp'}", "question=What colour is it?")
    assert out == "red"
    body = server.seen[0].body
    assert body["temperature"] == 0.0 and body["max_tokens"] == 5 and body["model"] == "scripted"
    image, text = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "What colour is it?"}
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert list(sent.convert("RGB").getdata()) == list(picture.getdata())


def test_a_server_error_is_retried_then_one_line(capsys):
    pytest.importorskip("openai")
    with scripted_server(lambda body, n: status(500)) as server:
        _, err = ask(server.url, capsys, "question=Hello?")
    assert server.count == 3  # the request and two retries
    assert "no answer (HTTP 500" in err and "see the server's log" in err and len(err.strip().splitlines()) == 1


def test_a_refused_key_is_said_at_once(capsys):
    pytest.importorskip("openai")
    with scripted_server(lambda body, n: status(401)) as server:
        _, err = ask(server.url, capsys, "question=Hello?")
    assert server.count == 1 and "HTTP 401: the key was refused" in err and "OPENAI_API_KEY" in err


def test_no_server_is_one_line_asking_whether_it_runs(capsys):
    pytest.importorskip("openai")
    _, err = ask(f"http://127.0.0.1:{free_port()}", capsys, "question=Hello?")
    assert "is the server running?" in err and "Traceback" not in err


def test_png_and_jpeg_files_are_sent_byte_for_byte(tmp_path):
    from lora_llava.endpoint.messages import image_part

    for name, mime in (("a.png", "image/png"), ("a.jpg", "image/jpeg")):
        Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / name)
        url = image_part(tmp_path / name)["image_url"]["url"]
        assert url == f"data:{mime};base64," + base64.b64encode((tmp_path / name).read_bytes()).decode()
