"""Write the labelled RAG dataset: help articles of a fictional software suite ("Lumen") and
questions about them, each labelled with the fact sentences (and documents) that answer it.

    python scripts/make_rag_dataset.py            # writes tests/fixtures/rag/

Deterministic (a seeded ``random.Random``): the same script writes the same bytes. The tests
read what it wrote; run it again only to change the dataset, and then re-measure the figures
(``python bench/bench_rag_eval.py``).

Corpus: 40 product areas x 5 article kinds (getting started, limits, troubleshooting, billing,
security) = 200 articles, mostly Markdown, some HTML (with a style sheet and a script that
ingestion must strip), some plain text, and two PDFs (written by hand here: one text page,
no dependency). Each article states five facts (one sentence each) between an introduction
and a "related articles" footer. Every area has the same kinds of fact with different values,
so the articles of other areas are hard negatives.

Questions (``questions.json``): each has ``id``, ``question``, ``kind`` (``single``,
``multi`` or ``unanswerable``) and ``parts``: one per sub-question, with the sub-question,
the fact sentences that answer it (``facts``) and their ``doc_ids`` (empty for an
unanswerable question). Questions paraphrase the facts (synonyms, other word order) about
half of the time, so lexical and semantic retrieval differ. Multi-part questions join two or
three sub-questions ("..., and ...?" or "...? Also, ...?"). Unanswerable questions ask about
things the articles do not cover: an attribute no article states, or an area that does not
exist.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "rag"
SEED = 20261207

#: (area, the thing it holds, a paraphrase of the area's name used in some questions)
AREAS: tuple[tuple[str, str, str], ...] = (
    ("Calendar", "event", "scheduling tool"), ("Forms", "form", "survey builder"),
    ("Billing Portal", "invoice", "payments dashboard"), ("Team Chat", "message", "messaging"),
    ("Video Meetings", "recording", "video calls"), ("Task Board", "card", "kanban board"),
    ("Document Editor", "document", "word processor"), ("Spreadsheets", "sheet", "tables app"),
    ("File Storage", "file", "cloud drive"), ("Photo Library", "photo", "picture gallery"),
    ("Contacts", "contact", "address book"), ("Mail", "email", "inbox"),
    ("Notes", "note", "notebook app"), ("Wiki", "page", "knowledge base"),
    ("Time Tracker", "timesheet", "hours logger"), ("Expense Reports", "receipt", "expenses"),
    ("Help Desk", "ticket", "support inbox"), ("CRM", "deal", "sales pipeline"),
    ("Automations", "workflow", "rule engine"), ("Webhooks", "endpoint", "event callbacks"),
    ("Audit Log", "entry", "activity history"), ("Reports", "report", "analytics"),
    ("Dashboards", "widget", "overview screens"), ("Mobile App", "device", "phone app"),
    ("Desktop Sync", "folder", "sync client"), ("Whiteboard", "board", "canvas"),
    ("Polls", "poll", "voting tool"), ("Bookings", "appointment", "reservation page"),
    ("Inventory", "item", "stock tracker"), ("Purchase Orders", "order", "procurement"),
    ("Payroll", "payslip", "salary runs"), ("Recruiting", "candidate", "hiring pipeline"),
    ("Learning Hub", "course", "training portal"), ("Newsletter", "campaign", "mailing tool"),
    ("Social Scheduler", "post", "social media planner"), ("Password Vault", "secret",
                                                          "credential manager"),
    ("Projects", "project", "project planner"), ("Surveys", "response", "feedback forms"),
    ("E-Signatures", "envelope", "signing service"), ("Guest Portal", "guest",
                                                      "visitor access"),
)
PLANS = ("Starter", "Team", "Business", "Enterprise")
ROLES = ("owner", "administrator", "billing manager", "editor")
MENUS = ("Workspace settings", "Integrations", "Labs", "Account preferences", "Admin Console")
REGIONS = ("Frankfurt", "Dublin", "Virginia", "Oregon", "Sydney", "Tokyo", "Montreal")
FORMATS = ("CSV", "JSON", "XLSX", "PDF", "XML")
DAYS = ("first", "second", "fifth", "tenth", "fifteenth", "last")
BROWSERS = ("Firefox", "Chrome", "Safari", "Edge")

R = random.Random(SEED)


@dataclass(frozen=True, kw_only=True)
class Fact:
    """One fact template: the sentence the article states and two questions it answers (a
    plain one close to the sentence's words, a paraphrase)."""

    sentence: str
    plain: str
    paraphrase: str
    values: Callable[[], dict[str, object]]


def _n(*choices: int) -> Callable[[], object]:
    return lambda: R.choice(choices)


def _pick(options: tuple[str, ...]) -> Callable[[], object]:
    return lambda: R.choice(options)


def _values(**makers: Callable[[], object]) -> Callable[[], dict[str, object]]:
    return lambda: {k: make() for k, make in makers.items()}


KINDS: dict[str, tuple[str, tuple[Fact, ...]]] = {
    "start": ("Getting started with {A}", (
        Fact(sentence="To turn on {A}, open {menu}, choose the {A} tab and switch on "
             "Enable {A}.",
             plain="Where do I turn on {A}?",
             paraphrase="How can I activate the {P}?",
             values=_values(menu=_pick(MENUS))),
        Fact(sentence="{A} is included in the {plan} plan and every plan above it.",
             plain="Which plan includes {A}?",
             paraphrase="What subscription tier do I need to get the {P}?",
             values=_values(plan=_pick(PLANS))),
        Fact(sentence="Only workspace {role}s can change the settings of {A}.",
             plain="Who can change the settings of {A}?",
             paraphrase="Which people are allowed to modify how the {P} is configured?",
             values=_values(role=_pick(ROLES))),
        Fact(sentence="The first import into {A} finishes within {n} minutes for most "
             "workspaces.",
             plain="How long does the first import into {A} take?",
             paraphrase="How much time should I expect the initial migration to the {P} "
             "to need?",
             values=_values(n=_n(5, 10, 15, 20, 30, 45))),
        Fact(sentence="{A} supports the latest two versions of {browser} and the desktop "
             "app.",
             plain="Which browser versions does {A} support?",
             paraphrase="Is my web client compatible with the {P}?",
             values=_values(browser=_pick(BROWSERS))),
    )),
    "limits": ("Limits and quotas in {A}", (
        Fact(sentence="Each workspace can create up to {n} {noun}s in {A}.",
             plain="How many {noun}s can a workspace create in {A}?",
             paraphrase="Is there a cap on the number of {noun}s in the {P}?",
             values=_values(n=_n(500, 1000, 2500, 5000, 10000))),
        Fact(sentence="A single {noun} in {A} can hold at most {n} MB of attachments.",
             plain="What is the attachment limit per {noun} in {A}?",
             paraphrase="How large can the files I attach to one {noun} in the {P} be?",
             values=_values(n=_n(10, 25, 50, 100, 250))),
        Fact(sentence="{A} keeps deleted {noun}s in the trash for {n} days before removing "
             "them for good.",
             plain="How long does {A} keep deleted {noun}s in the trash?",
             paraphrase="For how many days can I recover a {noun} I removed from the {P}?",
             values=_values(n=_n(7, 14, 30, 60, 90))),
        Fact(sentence="The {A} API accepts {n} requests per minute for each access token.",
             plain="What is the API rate limit of {A}?",
             paraphrase="How many calls per minute can my integration make to the {P}?",
             values=_values(n=_n(60, 120, 300, 600, 1200))),
        Fact(sentence="Search in {A} returns at most {n} {noun}s per page of results.",
             plain="How many results per page does search in {A} return?",
             paraphrase="When I look something up in the {P}, how many hits appear on one "
             "screen?",
             values=_values(n=_n(20, 25, 50, 100))),
    )),
    "trouble": ("Troubleshooting {A}", (
        Fact(sentence="If {A} shows error {code}, sign out, clear the local cache and sign "
             "in again.",
             plain="What should I do when {A} shows error {code}?",
             paraphrase="How do I fix the code {code} failure the {P} keeps showing?",
             values=_values(code=lambda: f"E{R.randint(100, 999)}")),
        Fact(sentence="{A} pauses syncing when the device has less than {n} GB of free disk "
             "space.",
             plain="Why does {A} pause syncing?",
             paraphrase="What makes the {P} stop synchronising on my computer?",
             values=_values(n=_n(1, 2, 5, 10))),
        Fact(sentence="Slow loading in {A} is usually caused by browser extensions that "
             "block scripts.",
             plain="Why is {A} loading slowly?",
             paraphrase="What usually makes the {P} sluggish to open?",
             values=_values()),
        Fact(sentence="The status page at status.lumen.example/{slug} lists current "
             "incidents for {A}.",
             plain="Where can I see current incidents for {A}?",
             paraphrase="How do I check whether the {P} is having an outage right now?",
             values=_values()),
        Fact(sentence="Support answers tickets about {A} within {n} business hours.",
             plain="How quickly does support answer tickets about {A}?",
             paraphrase="What response time can I expect from the helpdesk for problems "
             "with the {P}?",
             values=_values(n=_n(2, 4, 8, 12, 24))),
    )),
    "billing": ("Billing and plans for {A}", (
        Fact(sentence="{A} costs {n} dollars per user per month on the Business plan.",
             plain="How much does {A} cost per user per month on the Business plan?",
             paraphrase="What is the monthly seat price of the {P} for Business customers?",
             values=_values(n=_n(3, 4, 5, 6, 8, 10, 12))),
        Fact(sentence="Unused {A} credits roll over for {n} months before they expire.",
             plain="Do unused {A} credits roll over?",
             paraphrase="What happens to leftover {P} credits at the end of the month?",
             values=_values(n=_n(1, 3, 6, 12))),
        Fact(sentence="Refunds for {A} add-ons are paid within {n} days of cancellation.",
             plain="When are refunds for {A} add-ons paid?",
             paraphrase="How long until I get my money back after cancelling a {P} add-on?",
             values=_values(n=_n(5, 7, 10, 14))),
        Fact(sentence="Invoices for {A} are issued on the {day} day of each month.",
             plain="On which day are invoices for {A} issued?",
             paraphrase="When do the monthly bills for the {P} arrive?",
             values=_values(day=_pick(DAYS))),
        Fact(sentence="Annual billing for {A} saves {n} percent compared with monthly "
             "billing.",
             plain="How much does annual billing for {A} save?",
             paraphrase="How much cheaper is paying yearly for the {P}?",
             values=_values(n=_n(10, 15, 16, 20, 25))),
    )),
    "security": ("Security and data in {A}", (
        Fact(sentence="{A} data is encrypted at rest and stored in the {region} data "
             "centre.",
             plain="In which data centre is {A} data stored?",
             paraphrase="Where are the servers that hold my {P} information located?",
             values=_values(region=_pick(REGIONS))),
        Fact(sentence="Audit events for {A} are retained for {n} days.",
             plain="How long are audit events for {A} retained?",
             paraphrase="For how long can I look back at the activity trail of the {P}?",
             values=_values(n=_n(90, 180, 365, 730))),
        Fact(sentence="Administrators can export all {A} data as {fmt} from the Admin "
             "Console.",
             plain="In which format can administrators export {A} data?",
             paraphrase="What file type do I get when I download everything from the {P}?",
             values=_values(fmt=_pick(FORMATS))),
        Fact(sentence="Administrators can require two-step verification for {A} under "
             "Security policies.",
             plain="Can administrators require two-step verification for {A}?",
             paraphrase="Is it possible to enforce 2FA for everyone using the {P}?",
             values=_values()),
        Fact(sentence="Sessions in {A} end after {n} minutes without activity.",
             plain="When do sessions in {A} end?",
             paraphrase="How long can I stay idle before the {P} logs me out?",
             values=_values(n=_n(15, 30, 60, 120, 480))),
    )),
}

INTRO = ("This article explains {what} for {A}, the {P} of the Lumen suite. It is written for "
         "workspace members and administrators and applies to the web and desktop apps.")
WHAT = {"start": "how to get started", "limits": "the limits and quotas that apply",
        "trouble": "how to solve common problems", "billing": "how billing works",
        "security": "how data is protected"}
FOOTER = ("Related articles: {others}. Still stuck? Contact Lumen support from the Help menu.")

UNANSWERABLE = (
    "Does {A} integrate with Lotus Notes?",
    "Can I print {A} {noun}s on a fax machine?",
    "What is the carbon footprint of the servers behind {A}?",
    "Is there a Klingon translation of {A}?",
    "How many engineers built {A}?",
    "Does {A} run on Windows 95?",
    "What is the phone number of the product manager for {A}?",
    "Can {A} be installed on a smartwatch?",
    "Who designed the logo of {A}?",
    "Does {A} offer a discount for students in Antarctica?",
)
#: Areas the corpus does not have (questions about them ask for facts no article states).
MISSING_AREAS = (("Hologram Studio", "hologram", "3D projector"),
                 ("Fleet Tracker", "vehicle", "truck monitor"),
                 ("Recipe Box", "recipe", "cookbook"),
                 ("Greenhouse Control", "sensor", "plant monitor"))


def slug(text: str) -> str:
    return "-".join(text.lower().replace("-", " ").split())


def fill(template: str, area: tuple[str, str, str], values: dict[str, object]) -> str:
    name, noun, para = area
    return template.format(A=name, noun=noun, P=para, slug=slug(name), **values)


@dataclass(frozen=True, kw_only=True)
class Article:
    id: str
    kind: str
    area: tuple[str, str, str]
    title: str
    facts: tuple[str, ...]
    questions: tuple[tuple[str, str], ...]  # (plain, paraphrase) per fact
    paragraphs: tuple[str, ...]


def articles() -> list[Article]:
    out: list[Article] = []
    for area in AREAS:
        for kind, (title, facts) in KINDS.items():
            sentences, questions = [], []
            for fact in facts:
                values = fact.values()
                sentences.append(fill(fact.sentence, area, values))
                questions.append((fill(fact.plain, area, values),
                                  fill(fact.paraphrase, area, values)))
            others = ", ".join(fill(KINDS[k][0], area, {}) for k in KINDS if k != kind)
            paragraphs = (fill(INTRO, area, {"what": WHAT[kind]}), *sentences,
                          fill(FOOTER, area, {"others": others}))
            out.append(Article(id=f"{slug(area[0])}-{kind}", kind=kind, area=area,
                               title=fill(title, area, {}), facts=tuple(sentences),
                               questions=tuple(questions), paragraphs=paragraphs))
    return out


# ----------------------------------------------------------------------------- formats

def markdown(a: Article) -> str:
    intro, *facts, footer = a.paragraphs
    half = len(facts) // 2 + 1
    return (f"# {a.title}\n\n{intro}\n\n## Details\n\n" + "\n\n".join(facts[:half])
            + "\n\n## More\n\n" + "\n\n".join(facts[half:]) + f"\n\n{footer}\n")


def html(a: Article) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in a.paragraphs)
    return (f"<!doctype html>\n<html><head><title>{a.title}</title>\n"
            "<style>p { margin: 0 0 1em; } .nav { display: none; }</style>\n"
            "<script>window.analytics = {track: function () {}};</script></head>\n"
            f"<body><nav class=\"nav\">Home &gt; Help</nav>\n<h1>{a.title}</h1>\n{body}\n"
            "</body></html>\n")


def text(a: Article) -> str:
    return f"{a.title}\n\n" + "\n\n".join(a.paragraphs) + "\n"


def pdf(a: Article) -> bytes:
    """A one-page PDF whose text layer holds the title and one paragraph per line (Type 1
    Helvetica, uncompressed content stream): enough for text extraction."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    lines = [a.title, *a.paragraphs]
    ops = ["BT", "/F1 9 Tf", "11 TL", "40 800 Td"]
    for line in lines:
        ops += [f"({esc(line)}) Tj", "T*", "T*"]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
            "%%EOF\n").encode()
    return bytes(out)


def write_article(folder: Path, a: Article, index: int) -> str:
    if index in (17, 123):
        name = f"{a.id}.pdf"
        (folder / name).write_bytes(pdf(a))
    elif index % 10 in (3, 7):
        name = f"{a.id}.html"
        (folder / name).write_text(html(a), encoding="utf-8")
    elif index % 10 == 5:
        name = f"{a.id}.txt"
        (folder / name).write_text(text(a), encoding="utf-8")
    else:
        name = f"{a.id}.md"
        (folder / name).write_text(markdown(a), encoding="utf-8")
    return name


# --------------------------------------------------------------------------- questions

def part(a: Article, i: int, paraphrased: bool) -> dict[str, object]:
    plain, para = a.questions[i]
    return {"question": para if paraphrased else plain, "facts": [a.facts[i]],
            "doc_ids": [a.id]}


def join(questions: list[str]) -> str:
    """Two or three sub-questions as one question: '..., and ...?' or '...? Also, ...?'."""
    if R.random() < 0.5:
        return " Also, ".join(q[0].lower() + q[1:] if n else q for n, q in enumerate(questions))
    first = [q.rstrip("?") for q in questions[:-1]]
    last = questions[-1]
    return ", ".join(first) + ", and " + last[0].lower() + last[1:]


def questions(arts: list[Article]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    by_area: dict[str, list[Article]] = {}
    for a in arts:
        by_area.setdefault(a.area[0], []).append(a)
    singles = R.sample(arts, 100)
    for n, a in enumerate(singles):
        p = part(a, R.randrange(5), paraphrased=n % 2 == 1)
        out.append({"id": f"q{len(out):03d}", "question": p["question"], "kind": "single",
                    "parts": [p]})
    for n in range(30):
        area = R.choice(AREAS)[0]
        picked = R.sample(by_area[area], 3 if n % 3 == 0 else 2)
        parts = [part(a, R.randrange(5), paraphrased=R.random() < 0.4) for a in picked]
        out.append({"id": f"q{len(out):03d}",
                    "question": join([str(p["question"]) for p in parts]), "kind": "multi",
                    "parts": parts})
    for n in range(30):
        if n % 3 == 2:  # an area the corpus does not have, asked like a covered one
            area = MISSING_AREAS[n % len(MISSING_AREAS)]
            kind = R.choice(list(KINDS))
            fact = R.choice(KINDS[kind][1])
            question = fill(fact.plain, area, fact.values())
        else:
            question = fill(UNANSWERABLE[n % len(UNANSWERABLE)], R.choice(AREAS), {})
        out.append({"id": f"q{len(out):03d}", "question": question, "kind": "unanswerable",
                    "parts": [{"question": question, "facts": [], "doc_ids": []}]})
    return out


def main() -> None:
    docs = OUT / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for old in docs.iterdir():
        old.unlink()
    arts = articles()
    for i, a in enumerate(arts):
        write_article(docs, a, i)
    qs = questions(arts)
    (OUT / "questions.json").write_text(json.dumps(qs, indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    kinds = {k: sum(q["kind"] == k for q in qs) for k in ("single", "multi", "unanswerable")}
    print(f"{len(arts)} articles, {len(qs)} questions {kinds} -> {OUT}")


if __name__ == "__main__":
    main()
