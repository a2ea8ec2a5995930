"""Bad requests get OpenAI-style 4xx answers, never a 500 or a traceback, and a client that leaves in the
middle of a stream frees its slot at once (the server's /metrics shows no running row afterwards)."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        yield client


def post(http, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post(path, content=content, headers={"content-type": content_type})


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in response.text
    return body["error"]


CASES = [
    # (what, path, body bytes, content type, status, the error's param or code)
    ("not JSON", "/v1/completions", b'{"model": "a", "prompt": ', "application/json", 400, None),
    ("a JSON array", "/v1/completions", b"[1, 2]", "application/json", 400, None),
    ("invalid UTF-8", "/v1/chat/completions", b'{"model": "a", "messages": "\xff\xfe"}', "application/json", 400, None),
    ("a form", "/v1/completions", b"model=a&prompt=x", "application/x-www-form-urlencoded", 415, None),
    ("no model", "/v1/completions", b'{"prompt": "x"}', "application/json", 400, "model"),
    ("unknown model", "/v1/completions", b'{"model": "zz", "prompt": "x"}', "application/json", 404, "model"),
    ("no prompt", "/v1/completions", b'{"model": "a"}', "application/json", 400, "prompt"),
    ("prompt of numbers", "/v1/completions", b'{"model": "a", "prompt": [1, 2]}', "application/json", 400, "prompt"),
    ("empty prompt", "/v1/completions", b'{"model": "a", "prompt": ""}', "application/json", 400, "prompt"),
    ("no messages", "/v1/chat/completions", b'{"model": "a", "messages": []}', "application/json", 400, "messages"),
    (
        "content not text",
        "/v1/chat/completions",
        b'{"model": "a", "messages": [{"role": "user", "content": 5}]}',
        "application/json",
        400,
        "messages[0].content",
    ),
    (
        "ends with the assistant",
        "/v1/chat/completions",
        b'{"model": "a", "messages": [{"role": "assistant", "content": "hi"}]}',
        "application/json",
        400,
        "messages",
    ),
    (
        "max_tokens 0",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "max_tokens": 0}',
        "application/json",
        400,
        "max_tokens",
    ),
    (
        "max_tokens text",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "max_tokens": "9"}',
        "application/json",
        400,
        "max_tokens",
    ),
    (
        "absurd max_tokens",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "max_tokens": 1e308}',
        "application/json",
        400,
        "max_tokens",
    ),
    ("n 0", "/v1/completions", b'{"model": "a", "prompt": "x", "n": 0}', "application/json", 400, "n"),
    ("n too large", "/v1/completions", b'{"model": "a", "prompt": "x", "n": 1000}', "application/json", 400, "n"),
    ("top_p 0", "/v1/completions", b'{"model": "a", "prompt": "x", "top_p": 0}', "application/json", 400, "top_p"),
    (
        "NaN temperature",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "temperature": NaN}',
        "application/json",
        400,
        "temperature",
    ),
    (
        "stop of numbers",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "stop": [1]}',
        "application/json",
        400,
        "stop",
    ),
    (
        "five stops",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "stop": ["a","b","c","d","e"]}',
        "application/json",
        400,
        "stop",
    ),
    (
        "stream not bool",
        "/v1/completions",
        b'{"model": "a", "prompt": "x", "stream": "yes"}',
        "application/json",
        400,
        "stream",
    ),
]


@pytest.mark.parametrize("what,path,body,content_type,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_openai_errors(http, what, path, body, content_type, status, param):
    error = error_of(post(http, path, body, content_type), status)
    assert error["message"]
    if param is not None:
        assert param in (error["param"], error["code"])


def test_a_prompt_longer_than_the_context(http):
    body = json.dumps({"model": "a", "prompt": "word " * 5000}).encode()
    error = error_of(post(http, "/v1/completions", body), 400)
    assert error["code"] == "context_length_exceeded"
    assert re.search(r"maximum context length is \d+ tokens", error["message"])


def test_a_huge_body_is_refused_before_it_is_read(http):
    body = b'{"model": "a", "prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    error_of(post(http, "/v1/completions", body), 413)


def metric(http, name: str) -> int:
    text = http.get("/metrics").text
    return sum(int(v) for v in re.findall(name + r"\{[^}]*\} (\d+)", text))


def running(http) -> int:
    return metric(http, "instructrl_running_sequences")


def test_a_client_that_leaves_mid_stream_frees_its_slot(served, http):
    body = {"model": "a", "prompt": "go on", "max_tokens": 2000, "temperature": 1.0, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=served.url, timeout=60) as leaving:
        with leaving.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert json.loads(first[5:])["choices"][0]["index"] == 0
            assert running(http) == 1
            steps = metric(http, "instructrl_decode_steps_total")
        # the connection is closed here, long before 2000 tokens
    deadline = time.monotonic() + 30
    while running(http) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(http) == 0
    # it left the batch within a few steps of going, not after its 2000 tokens
    assert metric(http, "instructrl_decode_steps_total") - steps < 500
    # and the server goes on answering
    r = http.post("/v1/completions", json={"model": "a", "prompt": "hi", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_the_health_and_metrics_endpoints(http):
    assert http.get("/health").json() == {"status": "ok", "models": ["a", "b"]}
    assert "instructrl_decode_steps_total" in http.get("/metrics").text


def test_a_model_that_does_not_load_is_one_clear_line(tmp_path, capsys):
    from instructrl.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    for spec, expected in (
        (f"x={tmp_path / 'nowhere'}", "does not exist"),
        (f"x={tmp_path / 'empty'}", "holds no config.json"),
        (f"x={tmp_path / 'broken'}", "does not load"),
    ):
        assert main(["serve", f"model={spec}", f"db_url=sqlite:///{tmp_path / 'db.sqlite'}"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert main(["serve", "models=[a=x,a=y]"]) == 2
    assert "two models are called 'a'" in capsys.readouterr().err
