"""Writes planted_pii.jsonl and planted_secrets.jsonl (deterministic: a fixed seed).

    python tests/guard/data/make_planted.py

Every value is synthetic: documentation card numbers, example.com addresses, reserved IP
ranges, checksummed IBANs and ids, and random strings in the shape of provider keys.
"""

import base64
import json
import random
import string
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random(20261207)
URLSAFE = string.ascii_letters + string.digits + "-_"


def rnd(n, alphabet=string.ascii_letters + string.digits):
    return "".join(rng.choice(alphabet) for _ in range(n))
FW = {c: chr(ord(c) + 0xFEE0) for c in "0123456789"}
AR = {c: chr(0x0660 + int(c)) for c in "0123456789"}
def fullwidth(s): return "".join(FW.get(c, c) for c in s)
def arabic(s): return "".join(AR.get(c, c) for c in s)
ZW = "\u200b"
T = [
    "{v}",
    "{v} is what I have on file",
    "Hi team, please use {v}.",
    'the record says: {{"value": "{v}", "ok": true}}',
    "first line\nsecond: {v}\nthird line",
    "(see {v})",
    "«{v}» — as written",
    "Kunde Müller schreibt: {v}, danke!",
]
pii = [
    ("email", "jane.doe@example.com", None),
    ("email", "m.ruiz+billing@example.org", None),
    ("email", "Olga.Petrova@mail.example.co.uk", None),
    ("email", "support-42@sub.example.net", None),
    ("email", "jo" + ZW + "hn.smith@example.com", "john.smith@example.com"),
    ("email", "j\u043ehn.smith@example.com", "john.smith@example.com"),  # Cyrillic o
    ("email", "anna.k\uff20example.com", "anna.k@example.com"),  # fullwidth @
    ("email", "\u202eliame@example.com", "liame@example.com"),  # bidi override before
    ("phone", "+1 415 555 2671", None),
    ("phone", "(415) 555-2671", None),
    ("phone", "415.555.2671", None),
    ("phone", "+44 20 7946 0958", None),
    ("phone", "020 7946 0958", None),
    ("phone", "+33 6 12 34 56 78", None),
    ("phone", "+49 30 1234 5678", None),
    ("phone", "+44\u00a020\u00a07946\u00a00958", "+44 20 7946 0958"),
    ("phone", fullwidth("+44 20 7946 0958").replace("+", "\uff0b"), "+44 20 7946 0958"),
    ("phone", "415\u2013555\u20132671", "415-555-2671"),
    ("card", "4111111111111111", None),
    ("card", "4111 1111 1111 1111", None),
    ("card", "5555-5555-5555-4444", None),
    ("card", "378282246310005", None),
    ("card", "3782 822463 10005", None),
    ("card", "6011111111111117", None),
    ("card", "3530111333300000", None),
    ("card", "4012\u200d8888\u200d8888\u200d1881", "4012888888881881"),
    ("card", fullwidth("5105 1051 0510 5100"), "5105 1051 0510 5100"),
    ("card", arabic("4242424242424242"), "4242424242424242"),
    ("card", "4000\u00a00566\u00a05566\u00a05556", "4000 0566 5566 5556"),
    ("iban", "DE89 3704 0044 0532 0130 00", None),
    ("iban", "GB82WEST12345698765432", None),
    ("iban", "FR1420041010050500013M02606", None),
    ("iban", "NL91ABNA0417164300", None),
    ("iban", "ES91 2100 0418 4502 0005 1332", None),
    ("iban", "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000", "DE89 3704 0044 0532 0130 00"),
    ("us_ssn", "123-45-6789", None),
    ("us_ssn", "219 09 9999", None),
    ("uk_nino", "AB 12 34 56 C", None),
    ("uk_nino", "JG103759A", None),
    ("es_dni", "12345678Z", None),
    ("es_dni", "X1234567L", None),
    ("ip_address", "203.0.113.7", None),
    ("ip_address", "198.51.100.23", None),
    ("ip_address", "2001:db8:85a3::8a2e:370:7334", None),
    ("ip_address", "2001:0db8:0000:0000:0000:ff00:0042:8329", None),
    ("ip_address", fullwidth("203.0.113.99"), "203.0.113.99"),
    ("postal_address", "221B Baker Street, London NW1 6XE", None),
    ("postal_address", "1600 Pennsylvania Avenue, Washington, DC 20500", None),
    ("postal_address", "742 Evergreen Terrace, Springfield, IL 62704", None),
    ("postal_address", "10 Downing Street", None),
    ("card", ZW + "4111" + ZW + "1111 1111 1111" + ZW, "4111 1111 1111 1111"),
    ("email", "jane\U000e0041.doe@example.com", "jane.doe@example.com"),
    ("phone", "+44\u200e 20 7946\u200f 0958", "+44 20 7946 0958"),
    ("iban", "\uff24\uff25" + "89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
    ("ip_address", arabic("203.0.113.7"), "203.0.113.7"),
    ("email", "j\u03bfhn.doe@example.com", "john.doe@example.com"),
    ("us_ssn", "123\u2011 45\u2011 6789".replace(" ", ""), "123-45-6789"),
]
pem_body = "\n".join(rnd(64, string.ascii_letters + string.digits + "+/") for _ in range(6))
def b64(text):
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def jwt():
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}))
    p = b64(json.dumps({"sub": "1234567890", "name": "Jane"}))
    return f"{h}.{p}.{rnd(43, string.ascii_letters + string.digits + '-_')}"
aws_secret = rnd(40, string.ascii_letters + string.digits + "/+")
bearer = rnd(40, string.ascii_letters + string.digits + "-._")
pw = "S3cr3t-" + rnd(10)
gen_pw = "Xk9#" + rnd(8) + "$q"
secrets = [
    ("anthropic_key", "sk-ant-api03-" + rnd(48, URLSAFE), None, None),
    ("openai_key", "sk-proj-" + rnd(48), None, None),
    ("openai_key", "sk-" + rnd(48), None, None),
    ("aws_access_key_id", "AKIA" + rnd(16, string.ascii_uppercase + string.digits), None, None),
    ("aws_secret_key", "aws_secret_access_key = " + aws_secret, aws_secret, None),
    ("github_token", "ghp_" + rnd(36), None, None),
    ("github_token", "github_pat_" + rnd(22) + "_" + rnd(59), None, None),
    ("slack_token", "xoxb-" + rnd(12, string.digits) + "-" + rnd(13, string.digits) + "-"
     + rnd(24), None, None),
    ("stripe_key", "sk_live_" + rnd(24), None, None),
    ("stripe_key", "rk_test_" + rnd(24), None, None),
    ("google_api_key", "AIza" + rnd(35, URLSAFE), None, None),
    ("bearer_token", "Authorization: Bearer " + bearer, bearer, None),
    ("url_password", f"postgres://app:{pw}@db.internal:5432/app", pw, None),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\n" + pem_body
     + "\n-----END RSA PRIVATE KEY-----", pem_body.split("\n")[2], None),
    ("jwt", jwt(), None, None),
    ("generic_secret", "password: " + gen_pw, gen_pw, None),
    ("generic_secret", "client_secret=" + (s := rnd(32)), s, None),
    ("openai_key", "sk-" + ZW + "proj-" + (k := rnd(40)), "sk-proj-" + k, None),
    ("openai_key", "\u0455k-proj-" + (k2 := rnd(40)), "sk-proj-" + k2, None),
    ("github_token", "ghp_" + (g1 := rnd(18)) + ZW + (g2 := rnd(18)), "ghp_" + g1 + g2, None),
]
with (HERE / "planted_pii.jsonl").open("w", encoding="utf-8") as f:
    for i, (kind, value, canonical) in enumerate(pii):
        f.write(json.dumps({"id": f"{kind}-{i}", "kind": kind, "value": value,
                            "canonical": canonical or value,
                            "text": T[i % len(T)].format(v=value)}, ensure_ascii=False) + "\n")
with (HERE / "planted_secrets.jsonl").open("w", encoding="utf-8") as f:
    for i, (kind, value, secret, _) in enumerate(secrets):
        f.write(json.dumps({"id": f"{kind}-{i}", "kind": kind, "value": value,
                            "secret": secret or value,
                            "text": T[(i + 3) % len(T)].format(v=value)},
                           ensure_ascii=False) + "\n")
