"""Loading documents from files (Markdown, text, HTML, PDF) and cutting them into chunks on
section, paragraph and sentence boundaries with overlap."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from keel.context import count_tokens
from keel.patterns import Corpus, Document, load_document, load_documents
from keel.patterns._rag_chunk import chunk_document
from keel.patterns._rag_ingest import html_to_markdown
from tests.patterns.rag_helpers import HashEmbedder, make_pdf


def count(text: str) -> int:
    return count_tokens(text)


def test_markdown_file_with_front_matter(tmp_path: Path) -> None:
    path = tmp_path / "refund-policy.md"
    path.write_text("---\ntitle: \"Refund policy\"\ncategory: billing\n  nested: no\n---\n"
                    "# Heading one\n\nBody text.\n", encoding="utf-8")
    doc = load_document(path)
    assert doc.id == "refund-policy"
    assert doc.title == "Refund policy"
    assert doc.kind == "markdown"
    assert doc.metadata == {"category": "billing"}
    assert doc.source == str(path)
    assert doc.text.startswith("# Heading one")


def test_markdown_title_from_first_heading_and_id_override(tmp_path: Path) -> None:
    path = tmp_path / "a.markdown"
    path.write_text("Intro line\n\n# The Title #\n\ntext\n", encoding="utf-8")
    doc = load_document(path, id="kb/a")
    assert (doc.id, doc.title) == ("kb/a", "The Title")


def test_text_file_title_is_the_file_name_and_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "gift_cards.txt"
    path.write_bytes(b"\xef\xbb\xbfGift cards never expire.\n\xff broken byte\n")
    doc = load_document(path)
    assert doc.title == "gift cards"
    assert doc.kind == "text"
    assert doc.text.startswith("Gift cards never expire.")
    assert "\ufffd" in doc.text  # the documented fallback for undecodable bytes


def test_html_file(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_text("<!doctype html><html><head><title> Account &amp; login </title>"
                    "<style>.x{}</style></head><body><nav>Home</nav><h2>Two factor</h2>"
                    "<p>Turn on <i>two factor</i>&nbsp;login.</p><ul><li>one</li><li>two</li>"
                    "</ul><script>alert('x')</script><img src=a.png><br>after"
                    "<table><tr><td>a</td><td>b</td></tr></table></body></html>",
                    encoding="utf-8")
    doc = load_document(path)
    assert doc.kind == "html" and doc.title == "Account & login"
    title, text = html_to_markdown(doc.text)
    assert title == "Account & login"
    assert "alert" not in text and ".x{}" not in text
    assert "## Two factor" in text
    assert "Turn on two factor login." in text
    assert "- one\n- two" in text
    chunks = Corpus(embedder=HashEmbedder()).add([doc])
    assert chunks.added == ("page",)


def test_pdf_file(tmp_path: Path) -> None:
    path = tmp_path / "manual.pdf"
    path.write_bytes(make_pdf(["Refunds take five days.", "Shipping is free (mostly)."],
                              title="Manual"))
    doc = load_document(path)
    assert doc.kind == "pdf" and doc.title == "Manual"
    assert doc.text == "Refunds take five days.\n\nShipping is free (mostly)."
    untitled = tmp_path / "untitled.pdf"
    untitled.write_bytes(make_pdf(["Hello there."]))
    assert load_document(untitled).title == "untitled"


def test_load_documents_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "billing" / "refunds.md").write_text("# Refunds\n\nWithin 30 days.\n")
    (tmp_path / "shipping.txt").write_text("Ships in 3 days.\n")
    (tmp_path / "notes.docx").write_text("ignored")
    (tmp_path / ".hidden" / "secret.md").write_text("# no\n")
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["billing/refunds", "shipping"]
    listed = load_documents([tmp_path / "shipping.txt"])
    assert [d.id for d in listed] == ["shipping"]
    assert [d.id for d in load_documents(str(tmp_path / "shipping.txt"))] == ["shipping"]


def test_markdown_sections_nest_and_reset() -> None:
    text = ("Preamble.\n\n# A\n\nunder a\n\n## B\n\nunder b\n\n### C\n\nunder c\n\n"
            "## D\n\nunder d\n\nSetext\n======\n\nunder setext\n\nSub\n---\n\nunder sub\n\n"
            "```\n# not a heading\n```\n\n# [Linked](http://x) title\n\nbody\n")
    doc = Document(id="d", text=text, kind="markdown", title="T")
    chunks = chunk_document(doc, chunk_tokens=256, overlap_tokens=0, count=count)
    assert [(c.metadata.get("section", ""), c.text.splitlines()[0]) for c in chunks] == [
        ("", "Preamble."), ("A", "under a"), ("A > B", "under b"), ("A > B > C", "under c"),
        ("A > D", "under d"), ("Setext", "under setext"), ("Setext > Sub", "under sub"),
        ("Linked title", "body")]
    assert "# not a heading" in chunks[6].text


def test_long_sections_are_cut_with_overlap_within_the_budget() -> None:
    sentences = [f"Sentence number {n} talks about refunds and parcels." for n in range(200)]
    paragraphs = "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, 200, 5))
    doc = Document(id="long", text=paragraphs)
    chunks = chunk_document(doc, chunk_tokens=64, overlap_tokens=16, count=count)
    assert len(chunks) > 10
    for chunk in chunks:
        assert count(chunk.text) <= 64 + 4  # the joins add at most a token or so
    for before, after in itertools.pairwise(chunks):
        first = re.split(r"(?<=\.)\s+", after.text)[0]
        assert before.text.endswith(first)  # the overlap: the last sentence, repeated
    text = "\n\n".join(c.text for c in chunks)
    assert all(s in text for s in sentences)


def test_giant_words_and_sentences_are_cut_by_words_then_characters() -> None:
    words = " ".join(f"word{n}" for n in range(2000))
    blob = "x" * 20000
    doc = Document(id="giant", text=f"{words}\n\n{blob}")
    chunks = chunk_document(doc, chunk_tokens=64, overlap_tokens=0, count=count)
    assert all(count(c.text) <= 64 for c in chunks)
    assert blob in "".join(c.text for c in chunks)  # the pieces of a word join without spaces
    text = " ".join(c.text for c in chunks)
    assert set(re.findall(r"word\d+", text)) == {f"word{n}" for n in range(2000)}


def test_identical_passages_in_one_document_get_distinct_ids() -> None:
    doc = Document(id="dup", text="# A\n\nSame text.\n\n# A\n\nSame text.\n", kind="markdown")
    chunks = chunk_document(doc, chunk_tokens=64, overlap_tokens=0, count=count)
    assert len({c.id for c in chunks}) == 2
    assert chunks[1].id == chunks[0].id + ".2"


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (64, 8), (512, 64)])
def test_chunking_settings_change_the_fingerprint(size: int, overlap: int) -> None:
    text = " ".join(f"Line {n} of the help article." for n in range(300))
    corpus = Corpus(embedder=HashEmbedder(), chunk_tokens=size, overlap_tokens=overlap)
    corpus.add([Document(id="a", text=text)])
    assert all(count(c.text) <= size + 4 for c in corpus.chunks())


def test_a_giant_word_inside_a_sentence() -> None:
    doc = Document(id="w", text="Before the blob " + "y" * 3000 + " after the blob.")
    chunks = chunk_document(doc, chunk_tokens=32, overlap_tokens=0, count=count)
    assert chunks[0].text.startswith("Before the blob")
    assert chunks[-1].text.endswith("after the blob.")
    assert all(count(c.text) <= 32 for c in chunks)


def test_the_overlap_gives_way_to_a_long_sentence() -> None:
    short = [f"Tip {n} is short." for n in range(6)]
    long = " ".join(["Long sentence"] + [f"w{n}" for n in range(18)]) + "."
    doc = Document(id="o", text=" ".join([*short, long]))
    chunks = chunk_document(doc, chunk_tokens=60, overlap_tokens=25, count=count)
    assert all(count(c.text) <= 60 + 2 for c in chunks)
    assert count(long) > 60 - 25
    assert chunks[-1].text.endswith(long)


def test_html_with_an_unclosed_head() -> None:
    title, text = html_to_markdown("<html><head><title>Sloppy</title><meta charset=utf-8>"
                                   "<body><p>Visible text.</p>")
    assert (title, text) == ("Sloppy", "Visible text.")


def test_a_count_that_does_not_add_up_word_by_word() -> None:
    def count_joined_double(text: str) -> int:  # words alone 1 token, joined 2 each
        n = len(text.split())
        return n if n == 1 else 2 * n

    doc = Document(id="w", text=" ".join(f"w{n}" for n in range(100)))
    chunks = chunk_document(doc, chunk_tokens=16, overlap_tokens=0, count=count_joined_double)
    assert all(count_joined_double(c.text) <= 16 for c in chunks)
    assert " ".join(c.text for c in chunks) == doc.text


def test_a_giant_word_is_cut_without_counting_it_whole() -> None:
    seen: list[int] = []

    def counting(text: str) -> int:
        seen.append(len(text))
        return count(text)

    doc = Document(id="x", text="z" * 200_000)
    chunks = chunk_document(doc, chunk_tokens=64, overlap_tokens=0, count=counting)
    assert max(seen) <= 64 * 8
    assert "".join(c.text for c in chunks) == doc.text
    assert all(count(c.text) <= 64 for c in chunks)
