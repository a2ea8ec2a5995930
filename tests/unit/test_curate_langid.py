"""The batched language identifier must agree with ``langid.classify``, text by text."""

from __future__ import annotations

import json

import pytest

langid = pytest.importorskip("langid")
pytest.importorskip("scipy")

from instructrl.text.language import BatchLangId, get_identifier  # noqa: E402

HAND_MADE = [
    "Bonjour, comment allez-vous aujourd'hui ?",
    "Wie spät ist es und wann fährt der nächste Zug nach Berlin?",
    "今日はとても良い天気ですね。散歩に行きましょう。",
    "Привет, как дела? Что ты делаешь сегодня вечером?",
    "¿Dónde está la biblioteca más cercana?",
    "Explain quantum entanglement to a child.",  # langid says Italian: the batch must say so too
    "",
    "12345 678",
    "ok",
    "x" * 5000,  # longer than max_bytes: both read only its first 4,096 bytes
]


@pytest.fixture(scope="module")
def reference():
    """langid's own identifier (what ``langid.classify`` uses), built once for this module."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def test_agrees_with_langid_on_hand_made_texts(reference):
    ident = get_identifier()
    ours = ident.classify(HAND_MADE)
    ref = [reference.classify(t.encode("utf-8")[:4096].decode("utf-8", "ignore"))[0] for t in HAND_MADE]
    assert ours == ref
    assert ours[:5] == ["fr", "de", "ja", "ru", "es"]


def test_agrees_with_langid_on_real_prompts(shared_data, reference):
    texts = [json.loads(line) for line in open(shared_data / "oasst/prompt_lottery_en_250_text.jsonl")]
    texts += [json.loads(line)["instruction"] for line in open(shared_data / "self_instruct/seed_tasks.jsonl")]
    ours = get_identifier().classify(texts)
    ref = [reference.classify(t)[0] for t in texts]
    assert len(texts) == 425 and ours == ref


def test_scores_match_langid_log_probabilities(reference):
    texts = ["The cat sat on the mat.", "Le chat est sur le tapis."]
    ours = get_identifier().scores(texts)
    assert get_identifier().languages == [str(c) for c in reference.nb_classes]
    for text, row in zip(texts, ours):
        expected = reference.nb_classprobs(reference.instance2fv(text))
        assert row == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert get_identifier().classify([]) == []


def test_restricted_language_set():
    ident = BatchLangId(languages=["en", "fr", "de"])
    assert sorted(ident.languages) == ["de", "en", "fr"]
    assert ident.classify(["The cat sat on the mat.", "Le chat est sur le tapis.", "Die Katze sitzt."]) == [
        "en",
        "fr",
        "de",
    ]


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    from instructrl.text.language import _cache_path

    monkeypatch.setenv("INSTRUCTRL_CACHE", str(tmp_path))
    langs = ["en", "fr", "de", "it"]
    path = _cache_path(langs)
    assert path.parent == tmp_path / "langid"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")  # a broken cache is rebuilt from langid's model, not trusted
    built = BatchLangId(languages=langs)
    loaded = BatchLangId(languages=langs)  # from the rewritten cache file
    assert loaded.languages == built.languages and sorted(built.languages) == sorted(langs)
    texts = HAND_MADE[:2] + ["The cat sat on the mat.", "Explain quantum entanglement to a child."]
    assert (loaded.scores(texts) == built.scores(texts)).all()
    assert loaded.classify(texts) == ["fr", "de", "en", "it"]
