"""The serving engines in process: requests that join a running batch at different times get exactly the
greedy tokens Hugging Face ``generate`` gives each prompt alone (fp32), a seed makes sampling repeatable,
stop strings and token limits end a sequence as the API promises, and a cancelled request leaves the batch.
"""

from __future__ import annotations

import threading
import time

import pytest

from instructrl.models.loading import load_model, load_tokenizer
from instructrl.serve.engine import BatchEngine, PerRequestEngine, SamplingParams

from .conftest import hf_greedy

PROMPTS = [
    "Tell me a story about a cat",
    "hi",
    "Write three lines about the sea and the wind and the sky, please",
    "What is two plus two?",
    "A",
    "List five colours",
]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_model(str(tiny_model_dir), tokenizer=tok).eval()
    return model, tok


class Collector:
    """A listener that keeps the deltas and the end of one sequence."""

    def __init__(self):
        self.text, self.end, self.done = "", None, threading.Event()

    def __call__(self, event):
        kind, value = event
        if kind == "delta":
            self.text += value
        else:
            self.end = (kind, value)
            self.done.set()


def run_all(engine, prompts, params, *, stagger_s: float = 0.0):
    """Submit one sequence per prompt (``stagger_s`` apart, so later ones join a running batch); wait for all."""
    seqs, listeners = [], []
    for p, sp in zip(prompts, params):
        listener = Collector()
        seq = engine.sequence(tok_ids(engine.tokenizer, p), sp, listener)
        seqs.append(seq)
        listeners.append(listener)
        engine.submit(seq)
        time.sleep(stagger_s)
    for listener in listeners:
        assert listener.done.wait(60), "a sequence never ended"
    return seqs, listeners


def tok_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("engine_class", [BatchEngine, PerRequestEngine])
def test_greedy_equals_generate_alone_while_requests_come_and_go(model_and_tok, engine_class):
    model, tok = model_and_tok
    kwargs = {"max_batch": 4, "max_prefill": 2} if engine_class is BatchEngine else {}
    engine = engine_class(model, tok, **kwargs)
    engine.start()
    try:
        # different lengths, so rows finish at different steps and waiting ones take their places
        lengths = [12, 3, 20, 7, 15, 9]
        params = [SamplingParams(max_tokens=n, temperature=0.0) for n in lengths]
        seqs, listeners = run_all(engine, PROMPTS, params, stagger_s=0.01)
    finally:
        engine.stop()
    if engine_class is BatchEngine:
        assert engine.steps < sum(lengths)  # rows were decoded together, not one after another
    for prompt, n, seq, listener in zip(PROMPTS, lengths, seqs, listeners):
        expected = hf_greedy(model, tok, tok_ids(tok, prompt), n)
        assert seq.tokens == expected, prompt
        assert listener.end == ("done", "stop" if expected[-1] == tok.eos_token_id else "length")
        text = tok.decode(expected, skip_special_tokens=True)
        assert listener.text == text


def test_seeded_sampling_repeats_and_differs_by_seed(model_and_tok):
    model, tok = model_and_tok
    engine = BatchEngine(model, tok, max_batch=8)
    engine.start()
    try:
        params = [SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=s) for s in (7, 7, 8)]
        seqs, _ = run_all(engine, ["hello there"] * 3, params)
        again, _ = run_all(engine, ["hello there"], [SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=7)])
    finally:
        engine.stop()
    assert seqs[0].tokens == seqs[1].tokens == again[0].tokens
    assert seqs[0].tokens != seqs[2].tokens


def test_stop_string_cuts_the_text_and_is_not_sent(model_and_tok):
    model, tok = model_and_tok
    engine = BatchEngine(model, tok)
    engine.start()
    try:
        # find what greedy decoding writes, then stop on a piece of it
        free, listener = run_all(engine, ["Write a story"], [SamplingParams(max_tokens=24, temperature=0.0)])
        text = listener[0].text
        assert len(text) > 6, "the tiny model wrote too little to test a stop string"
        stop = text[3:6]
        cut = text[: text.find(stop)]
        seqs, listeners = run_all(
            engine, ["Write a story"], [SamplingParams(max_tokens=24, temperature=0.0, stop=(stop, "\x00never"))]
        )
    finally:
        engine.stop()
    assert listeners[0].text == cut
    assert listeners[0].end == ("done", "stop")
    assert len(seqs[0].tokens) < len(free[0].tokens)


def test_a_cancelled_request_leaves_the_batch(model_and_tok):
    model, tok = model_and_tok
    engine = BatchEngine(model, tok, max_batch=4)
    engine.start()
    try:
        long = Collector()
        seq = engine.sequence(tok_ids(tok, "go on forever"), SamplingParams(max_tokens=1500, temperature=1.0), long)
        engine.submit(seq)
        deadline = time.monotonic() + 30
        while engine.running != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running == 1
        seq.cancel()
        while engine.running != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running == 0
        assert not long.done.is_set()  # a client that left is told nothing more
        assert len(seq.tokens) < 1500
        # the engine goes on serving
        seqs, listeners = run_all(engine, ["hi"], [SamplingParams(max_tokens=4, temperature=0.0)])
        assert listeners[0].end[0] == "done"
    finally:
        engine.stop()
