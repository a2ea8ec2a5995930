"""The Generator interface: HF batched generation on the tiny model and the OpenAI-compatible client
against a local server started by the test."""

from __future__ import annotations

import pytest

from instructrl.models.generation import Generation, Generator, HFGenerator, OpenAIError, OpenAIGenerator, cut_at_stop
from tests.openai_stub import OpenAIStub, by_prompt, from_generator, scripted

PROMPTS = [
    "Write a poem about the sea.",
    "Hi",
    [{"role": "user", "content": "What is the capital of France?"}],
    "List three ideas for a birthday party, please, with details.",
]


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return HFGenerator.from_pretrained(str(tiny_model_dir), device="cpu", batch_size=3)


def test_cut_at_stop():
    assert cut_at_stop("a\n\nb\nc", ["\nc", "\n\n"]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", None) == ("abc", False)


def test_batched_greedy_equals_one_at_a_time(hf):
    batched = hf.generate(PROMPTS, max_new_tokens=12, temperature=0)
    single = [hf.generate([p], max_new_tokens=12, temperature=0)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    assert isinstance(hf, Generator)


def test_length_finish_and_token_ids(hf):
    gens = hf.generate(PROMPTS[:2], max_new_tokens=7, temperature=0)
    for g in gens:
        assert isinstance(g, Generation)
        eos = hf.tokenizer.eos_token_id
        if g.finish_reason == "length":
            assert len(g.token_ids) == 7 and eos not in g.token_ids
        else:
            assert g.token_ids[-1] == eos
        body = [t for t in g.token_ids if t != eos]
        assert g.text == hf.tokenizer.decode(body, skip_special_tokens=True)


def test_stop_strings_cut_text(hf):
    full = hf.generate(["Write a poem about the sea."], max_new_tokens=16, temperature=0)[0]
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = hf.generate(["Write a poem about the sea."], max_new_tokens=16, temperature=0, stop=[stop])[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert len(cut.token_ids) <= len(full.token_ids)


def test_seeded_sampling_is_reproducible(hf):
    a = hf.generate(PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    b = hf.generate(PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    c = hf.generate(PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=4)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]


def test_raw_prompts_skip_the_chat_template(hf):
    raw = hf._encode(["1. one\n2."], raw=True)[0]
    chat = hf._encode(["1. one\n2."], raw=False)[0]
    assert hf.tokenizer.decode(raw) == "1. one\n2."
    assert hf.tokenizer.decode(chat).startswith("<|im_start|>user\n")
    with pytest.raises(TypeError, match=r"prompts\[0\]"):
        hf.generate([[{"role": "user", "content": "x"}]], raw=True)
    with pytest.raises(TypeError):
        hf.generate("not a list")
    assert hf.generate([], max_new_tokens=3) == []


def test_openai_routes_params_and_order():
    def reply(req):
        return f"[{req.kind}] {req.text[-12:]} seed={req.seed} max={req.max_tokens} stops={len(req.stop)} t={req.temperature}"

    with OpenAIStub(reply) as server:
        gen = OpenAIGenerator(server.base_url, "stub-model", api_key_env=None, concurrency=3)
        prompts = [f"prompt number {i}" for i in range(7)]
        out = gen.generate(prompts, raw=True, max_new_tokens=5, temperature=0.5, stop=["@@"], seed=10)
        assert [g.text for g in out] == [
            f"[completions] mpt number {i} seed={10 + i} max=5 stops=1 t=0.5" for i in range(7)
        ]
        assert all(g.finish_reason == "stop" and g.token_ids == [] for g in out)
        chat = gen.generate([[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]])
        assert chat[0].text == "[chat] Hello there seed=None max=256 stops=0 t=1.0"
        assert server.requests[-1]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert {r["model"] for r in server.requests} == {"stub-model"}


def test_openai_stop_and_length_are_applied_client_side():
    with OpenAIStub(scripted([("one two\n\nthree", "stop"), ("cut off mid", "length")])) as server:
        gen = OpenAIGenerator(server.base_url, "m", api_key_env=None, concurrency=1)
        a, b = gen.generate(["p1", "p2"], raw=True, stop=["\n\n"] + ["x1", "x2", "x3", "x4"])
        assert (a.text, a.finish_reason) == ("one two", "stop")
        assert (b.text, b.finish_reason) == ("cut off mid", "length")
        assert server.requests[0]["stop"] == ["\n\n", "x1", "x2", "x3"]  # the API takes at most 4


def test_openai_key_retries_and_errors(monkeypatch):
    with OpenAIStub(by_prompt(lambda p: p.upper()), api_key="sekrit") as server:
        monkeypatch.delenv("STUB_KEY", raising=False)
        gen = OpenAIGenerator(server.base_url, "m", api_key_env="STUB_KEY", max_retries=2, backoff=0.01)
        with pytest.raises(OpenAIError, match="HTTP 401"):
            gen.generate(["x"], raw=True)
        monkeypatch.setenv("STUB_KEY", "sekrit")
        server.fail_next(2, 503)
        assert gen.generate(["abc"], raw=True)[0].text == "ABC"
        server.fail_next(3, 503)
        with pytest.raises(OpenAIError, match="HTTP 503"):
            gen.generate(["abc"], raw=True)
        server.fail_next(1, 400)
        with pytest.raises(OpenAIError, match="HTTP 400"):
            gen.generate(["abc"], raw=True)
    with pytest.raises(ValueError, match="http"):
        OpenAIGenerator("localhost:8000", "m")


def test_stub_serves_a_generator(hf):
    direct = hf.generate(["Hello there"], raw=True, max_new_tokens=8, temperature=0)[0]
    with OpenAIStub(from_generator(hf)) as server:
        via = OpenAIGenerator(server.base_url, "tiny", api_key_env=None).generate(
            ["Hello there"], raw=True, max_new_tokens=8, temperature=0
        )[0]
    assert via.text == direct.text and via.finish_reason == direct.finish_reason
