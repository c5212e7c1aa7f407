"""Heuristic filters (Gopher, C4, FineWeb, URL), language ID and PII redaction."""

import random
from collections import Counter

import pytest

from conftest import data_path
from smelt.data.base import build_step
from smelt.data.document import Document
from smelt.data.filters.gopher import NGrams
from smelt.data.filters.text import count_sentences, split_words


def _step(type_name, **kw):
    s = build_step({"type": type_name, **kw}, 0)
    s.ensure_setup()
    return s


def _ref_top(words, n):  # datatrove's find_top_duplicate over " ".join n-grams
    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    g, c = Counter(grams).most_common(1)[0]
    return len(g) * c


def _ref_all_dup(words, n):  # datatrove's find_all_duplicate
    seen, total, i = set(), 0, 0
    while i < len(words) - n + 1:
        g = "".join(words[i:i + n])
        if g in seen:
            total += len(g)
            i += n
        else:
            seen.add(g)
            i += 1
    return total


def test_vectorised_ngram_stats_match_reference():
    rng = random.Random(0)
    vocab = [f"w{i}" * rng.randint(1, 3) for i in range(30)]
    for trial in range(200):
        n_words = rng.randint(0, 120)
        words = [rng.choice(vocab[: rng.randint(2, 30)]) for _ in range(n_words)]
        if trial % 3 == 0 and words:  # pasted repeats
            k = rng.randint(1, len(words))
            words = words + words[:k] + words
        g = NGrams(words)
        for n in (2, 3, 4):
            assert g.top_chars(n) == _ref_top(words, n), (trial, n)
        for n in range(5, 11):
            assert g.dup_chars(n) == _ref_all_dup(words, n), (trial, n)


def test_word_splitter_follows_spacy_english_rules():
    assert split_words("I don't know, it's U.S. policy... see https://x.com/a?b=1. Well-known 1,000.50!") == [
        "I", "do", "n't", "know", ",", "it", "'s", "U.S.", "policy", "...", "see", "https://x.com/a?b=1", ".",
        "Well", "-", "known", "1,000.50", "!"]
    assert split_words("Dr. Smith im Haus. USA. Covid-19 mail a@b.de @handle") == [
        "Dr.", "Smith", "i", "m", "Haus", ".", "USA", ".", "Covid-19", "mail", "a@b.de", "@handle"]
    assert count_sentences(split_words("One. Two! Three? (yes) four")) == 4


ENGLISH = ("The quick brown fox jumps over the lazy dog and runs to the river. " * 2 +
           "It is a truth universally acknowledged that a single man in possession of a good fortune must be "
           "in want of a wife. However little known the feelings or views of such a man may be on his first "
           "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.\n")


def test_gopher_quality_reasons():
    g = _step("gopher_quality")
    assert g.process(Document("too short to matter", "a")) == "gopher_short_doc"
    words = " ".join(f"word{i}" for i in range(80))
    assert g.process(Document(words, "b")) == "gopher_enough_stop_words"
    assert g.process(Document(" ".join(["#tag"] * 60 + ["the", "and"] * 10), "c")) == "gopher_too_many_hashes"
    assert g.process(Document(ENGLISH * 3, "d")) is None


def test_gopher_repetition_reasons():
    g = _step("gopher_repetition")
    assert g.process(Document("", "e")) == "empty"
    assert g.process(Document("same line here\n" * 10 + "other", "a")) == "dup_line_frac"
    assert g.process(Document("same para here\n\n" * 10 + "other", "p")) == "dup_para_frac"
    assert g.process(Document(ENGLISH, "b")) is None


def test_c4_rewrites_and_drops():
    c4 = _step("c4")
    d = Document("Menu\nHome | About\n" + ENGLISH + "Please enable javascript to continue.\n"
                 "We use cookies, see our privacy policy.\nA citation [1] here is fine ok.", "a")
    assert c4.process(d) is None
    assert "Menu" not in d.text and "javascript" not in d.text and "privacy" not in d.text
    assert "A citation  here is fine ok." in d.text
    assert c4.process(Document(ENGLISH + "Lorem ipsum dolor sit amet.", "b")) == "lorem_ipsum"
    assert c4.process(Document(ENGLISH + "function f() { return 1; }.", "c")) == "curly_bracket"
    assert c4.process(Document("One sentence only here.", "d")) == "too_few_sentences"


def test_c4_badwords_uses_the_shared_list():
    data_path("lists/badwords_en.txt")
    bw = _step("c4_badwords")
    assert bw.process(Document("a perfectly clean sentence", "a", {"language": "en"})) is None
    assert bw.process(Document("this is porn content", "b", {"language": "en"})) == "badwords"
    assert bw.process(Document("this is porn content", "c", {"language": "de"})) is None


def test_fineweb_quality_reasons():
    fw = _step("fineweb_quality")
    assert fw.process(Document("no punctuation line\nanother one here\nand more", "a")) == "line_punct_ratio"
    assert fw.process(Document("Short.\nLines.\nEverywhere.\n" + ENGLISH, "b")) == "short_line_ratio"
    assert fw.process(Document(ENGLISH + ENGLISH, "c")) == "char_dup_ratio"
    assert fw.process(Document(ENGLISH, "d")) is None


def test_url_filter_with_own_lists():
    u = _step("url", lists_dir="", extra_domains=["bad-site.com"], banned_words=["casino"],
              soft_banned_words=["sexy", "hot"], banned_subwords=["xxx"])
    assert u.process(Document("t", "a", {"url": "https://www.bad-site.com/page"})) == "domain"
    assert u.process(Document("t", "b", {"url": "https://ok.org/casino/games"})) == "hard_blacklisted"
    assert u.process(Document("t", "c", {"url": "https://ok.org/sexy-hot-deals"})) == "soft_blacklisted"
    assert u.process(Document("t", "d", {"url": "https://ok.org/bestxxxvideos"})) == "blacklisted_subword"
    assert u.process(Document("t", "e", {"url": "https://ok.org/recipes"})) is None
    assert u.process(Document("t", "f", {})) is None


def test_language_id_bundled_model():
    pytest.importorskip("py3langid")
    lang = _step("language", languages=["en"])
    d = Document(ENGLISH, "a")
    assert lang.process(d) is None and d.metadata["language"] == "en" and d.metadata["language_score"] > 0.9
    de = Document("Das ist ein deutscher Satz über das Wetter und die Berge im Süden des Landes.", "b")
    assert lang.process(de) == "other_language" and de.metadata["language"] == "de"


def test_pii_redaction_counts_types():
    pii = _step("pii")
    text = ("Mail john.doe@example.com or call +49 30 1234567 or 555-123-4567. Card 4111 1111 1111 1111, "
            "not 4111 1111 1111 1112. IP 8.8.8.8 vs 192.168.0.1; 2001:4860:4860::8888 vs ::1. "
            "Date 2020-01-01, price 1,234.56, time 10:30:00.")
    d = Document(text, "a")
    assert pii.process(d) is None
    assert d.text == ("Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER> or <PHONE_NUMBER>. Card <CREDIT_CARD_NUMBER>, "
                      "not 4111 1111 1111 1112. IP <IP_ADDRESS> vs 192.168.0.1; <IP_ADDRESS> vs ::1. "
                      "Date 2020-01-01, price 1,234.56, time 10:30:00.")
    assert pii.counters == {"pii_email": 1, "pii_phone": 2, "pii_credit_card": 1, "pii_ip": 2}
