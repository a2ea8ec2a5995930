"""The API as the official ``openai`` client sees it (a keyless server on 127.0.0.1, as a local vLLM is):
chat and text completions, streaming with usage, ``n``, ``seed``, ``stop``, and errors in OpenAI's shape.
Greedy answers are checked against Hugging Face ``generate`` on the same tiny model.
"""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai", reason="the openai client is not installed: pip install -e '.[dev]'")

from instructrl.models.loading import load_model, load_tokenizer, render_prompt  # noqa: E402

from .conftest import hf_greedy  # noqa: E402


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.api, api_key="anything-goes-while-no-key-exists", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    return load_model(str(tiny_model_dir), tokenizer=tok).eval(), tok


def greedy(reference, ids: list[int], n: int) -> list[int]:
    return hf_greedy(*reference, ids, n)


def test_models_are_listed(client):
    assert sorted(m.id for m in client.models.list()) == ["a", "b"]
    assert client.models.retrieve("b").id == "b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_completion_is_the_models_greedy_answer(client, reference):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    r = client.chat.completions.create(model="a", messages=messages, max_tokens=12, temperature=0)
    tok = reference[1]
    ids = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
    expected = greedy(reference, ids, 12)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == tok.decode(expected, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(expected)
    assert r.usage.total_tokens == len(ids) + len(expected)
    assert r.choices[0].finish_reason == ("stop" if expected[-1] == tok.eos_token_id else "length")
    assert r.model == "a" and r.id.startswith("chatcmpl-")


def test_text_completion_with_n_and_several_prompts(client, reference):
    tok = reference[1]
    r = client.completions.create(model="a", prompt=["Once upon", "The end"], max_tokens=6, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for k, prompt in enumerate(["Once upon", "Once upon", "The end", "The end"]):
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        assert r.choices[k].text == tok.decode(greedy(reference, ids, 6), skip_special_tokens=True)


def test_streaming_chat_matches_the_whole_answer_and_reports_usage(client):
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    whole = client.chat.completions.create(model="b", messages=messages, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model="b", messages=messages, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    parts, finish, usage, roles = [], None, None, []
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            roles.append(delta.role)
            parts.append(delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert roles[0] == "assistant"
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_streaming_text_completion(client):
    stream = client.completions.create(model="a", prompt="Hello", max_tokens=8, temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    whole = client.completions.create(model="a", prompt="Hello", max_tokens=8, temperature=0)
    assert text == whole.choices[0].text


def test_a_seed_repeats_a_sample_and_n_samples_differ(client):
    kwargs = dict(model="a", prompt="Random words:", max_tokens=12, temperature=1.0, seed=1234)
    first = client.completions.create(n=3, **kwargs)
    second = client.completions.create(n=3, **kwargs)
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert len({c.text for c in first.choices}) > 1


def test_stop_sequences_end_the_text(client):
    free = client.completions.create(model="a", prompt="abc", max_tokens=20, temperature=0).choices[0].text
    assert len(free) > 4
    stop = free[2:4]
    cut = client.completions.create(model="a", prompt="abc", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == free[: free.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_errors_come_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="a", prompt="x " * 3000, max_tokens=10)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="a", prompt="x", max_tokens=-5)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="a", prompt="x", max_tokens=10**9)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="a", messages=[{"role": "wizard", "content": "x"}])
    assert "role" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="a", prompt="x", temperature=7)
    assert e.value.body["param"] == "temperature"
