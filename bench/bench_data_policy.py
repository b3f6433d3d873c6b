"""The personal-data policy on the hot path: ``DataScope.scrub`` per destination.

    python bench/bench_data_policy.py      # a markdown table on stdout (< 30 s)

Cases: a 200-character support reply with no personal data and no secret (the common case: one
cheap gate, no detector runs), the same with non-ASCII letters (folded first), a 200-character
message with an e-mail address and a card number, and a 10 KB tool output (JSON records, a
few values in it). Each figure is the median of 15 rounds of a batch, in microseconds per
call, with an ``str.replace`` of the same text measured in the same process as the floor.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keel.guard import DataPolicy

PLAIN = ("Thanks for reaching out about your order. We have looked into it and the parcel is "
         "on its way; it should arrive within three working days. Let us know if there is "
         "anything else we can help with today.")[:200]
ACCENTED = ("Merci pour votre message, Mme Lefèvre. Nous avons vérifié votre commande : le "
            "colis est en route et arrivera d'ici trois jours ouvrés. Bonne journée à vous, "
            "l'équipe du service client.")[:200]
WITH_PII = ("Hi, I'm Jane (jane.doe@example.com). I paid with 4111 1111 1111 1111 yesterday "
            "but the order still shows as pending; could you check and refund if it failed? "
            "Thanks a lot for the help!")[:200]
TOOL_OUTPUT = json.dumps([{"order": f"A-{1000 + i}", "status": "shipped",
                           "items": ["socks", "mug"], "note": "left at the door",
                           "contact": "jane.doe@example.com" if i % 25 == 0 else "on file"}
                          for i in range(100)])[:10_240]


def per_call_us(fn: Callable[[], object], batch: int, rounds: int = 15) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(samples)


def main() -> None:
    scope = DataPolicy().scope(agent="support")
    cases = [("200 chars, nothing to find", PLAIN, 5000),
             ("200 chars, accented, nothing to find", ACCENTED, 2000),
             ("200 chars, an e-mail and a card", WITH_PII, 500),
             (f"{len(TOOL_OUTPUT) // 1024} KB tool output (JSON), 4 e-mails", TOOL_OUTPUT, 50)]
    print("| text | floor (str.replace) | logs | answers | journal |")
    print("|---|---:|---:|---:|---:|")
    for label, text, batch in cases:
        floor = per_call_us(lambda t=text: t.replace("\x00", ""), batch)
        figures = [per_call_us(lambda t=text, d=dest: scope.scrub(t, d), batch)
                   for dest in ("logs", "answers", "journal")]
        print(f"| {label} | {floor:.2f} µs | " + " | ".join(f"{f:.1f} µs" for f in figures)
              + " |")


if __name__ == "__main__":
    main()
