"""The engine against the real bundled model through llama.cpp."""

import threading

import pytest

from diptych.models import catalog
from diptych.models.engine import Completion, Engine, EngineBusy, SamplingParams, Token

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine(bundled_model):
    e = Engine(bundled_model, n_ctx=1024, n_threads=2)
    yield e
    e.close()


def collect(stream):
    items = list(stream)
    assert isinstance(items[-1], Completion)
    return [i for i in items if isinstance(i, Token)], items[-1]


def test_streams_tokens_then_a_completion(engine):
    tokens, done = collect(engine.stream(QUESTION, SamplingParams(max_tokens=24, seed=1)))
    assert "".join(t.text for t in tokens) == done.text
    assert 0 < done.n_tokens <= 24
    assert done.n_prompt_tokens == len(engine.tokenize(engine.render(QUESTION)))
    assert done.ttft_s > 0 and done.finish_reason in ("stop", "length")


def test_prompt_is_tokenized_with_one_bos(engine):
    ids = engine.tokenize(engine.render(QUESTION))
    assert ids[0] == engine.model.token_bos() and ids.count(engine.model.token_bos()) == 1
    assert engine.token_text(ids[1]) == "<start_of_turn>"


def test_fixed_seed_repeats_and_another_seed_differs(engine):
    a = engine.generate(QUESTION, SamplingParams(max_tokens=24, seed=7))
    b = engine.generate(QUESTION, SamplingParams(max_tokens=24, seed=7))
    c = engine.generate(QUESTION, SamplingParams(max_tokens=24, seed=8))
    assert a.text == b.text
    assert c.text != a.text


def test_cancel_returns_within_one_token(engine):
    cancel = threading.Event()
    seen = 0
    last = None
    for item in engine.stream(QUESTION, SamplingParams(max_tokens=200, seed=3,
                                                       repeat_penalty=1.0), cancel):
        if isinstance(item, Token) and item.id >= 0:
            seen += 1
            if seen == 3:
                cancel.set()
        last = item
    assert last.finish_reason == "cancelled"
    assert last.n_tokens == 3


def test_stop_string_cuts_the_answer(engine):
    free = engine.generate(QUESTION, SamplingParams(max_tokens=40, seed=5))
    word = free.text.split()[1]
    cut = engine.generate(QUESTION, SamplingParams(max_tokens=40, seed=5, stop=(word,)))
    assert word not in cut.text and cut.finish_reason == "stop"
    assert free.text.startswith(cut.text)


def test_logprobs_on_request(engine):
    done = engine.generate(QUESTION, SamplingParams(max_tokens=6, seed=2, temperature=0.0),
                           top_logprobs=3)
    first = done.tokens[0]
    assert first.logprob is not None and first.logprob <= 0
    # greedy: the sampled token is the likeliest one
    assert first.top[0][1] == pytest.approx(first.logprob)


def test_one_engine_refuses_a_second_concurrent_call(engine):
    stream = engine.stream(QUESTION, SamplingParams(max_tokens=4, seed=1))
    next(stream)
    with pytest.raises(EngineBusy):
        engine.generate(QUESTION)
    stream.close()
    assert engine.generate(QUESTION, SamplingParams(max_tokens=2)).n_tokens > 0


def test_two_engines_generate_at_once(bundled_model, engine):
    other = Engine(bundled_model, n_ctx=1024, n_threads=1)
    results = {}

    def run(name, e):
        results[name] = e.generate(QUESTION, SamplingParams(max_tokens=16, seed=4))

    threads = [threading.Thread(target=run, args=(n, e)) for n, e in (("a", engine), ("b", other))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results["a"].n_tokens > 0 and results["b"].n_tokens > 0
    other.close()


def test_context_overflow_is_a_clear_error(engine):
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(Exception, match="start a new conversation"):
        engine.generate(long)


def test_unknown_architecture_gets_llama_cpp_reason(tiny_gguf):
    path = tiny_gguf
    with pytest.raises(catalog.ModelFileError, match="llama.cpp could not load tiny.gguf.*notanarch"):
        Engine(path)
