#!/usr/bin/env python
"""Writes the benchmark's Django database as tab-separated files, for PostgreSQL's
COPY and MariaDB's LOAD DATA alike (backslash escapes, \\N for NULL).

    gen_data.py OUT_DIR SIZE_MB [JOBS]

The text is made to compress like real prose, not like repeated test rows: a
vocabulary of invented words with English-like letter and length frequencies,
drawn with Zipf weights; a pool of sentences larger than zstd's and gzip's
windows, from which article bodies and comments are drawn; random UUIDs,
password hashes and session payloads; JSON with varied values. The same seed
gives the same rows, so both engines hold the same data.
"""

import base64
import json
import os
import random
import string
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta

SEED = 20261122
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_WEIGHTS = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
                  1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]  # fmt: skip
# Word lengths 1..14, roughly as in English text.
LENGTH_WEIGHTS = [3, 17, 21, 16, 11, 9, 8, 6, 4, 2.5, 1.5, 0.8, 0.4, 0.2]
VOCABULARY = 30_000
SENTENCES = 250_000
EPOCH = datetime(2019, 1, 1)
SPAN = 6 * 365 * 86400
# Share of the data, and average row size in bytes, per table.
PLAN = {"auth_user": (0.06, 280), "django_session": (0.08, 440), "blog_article": (0.64, 2880),
        "blog_comment": (0.22, 475)}  # fmt: skip
USER_AGENTS = [f"Mozilla/5.0 ({os_}) {engine}/{v}" for os_ in ("X11; Linux x86_64", "Windows NT 10.0; Win64",
               "Macintosh; Intel Mac OS X 14_4", "iPhone; CPU iPhone OS 17_4") for engine, v in
               (("Firefox", "124.0"), ("Chrome", "123.0.6312.86"), ("Safari", "605.1.15"))]  # fmt: skip


def counts(size_mb):
    return {t: max(10, int(size_mb * 1e6 * share / row)) for t, (share, row) in PLAN.items()}


class Text:
    """Words and sentences, rebuilt identically in every worker from the seed."""

    def __init__(self):
        rnd = random.Random(SEED)
        words = set()
        while len(words) < VOCABULARY:
            n = rnd.choices(range(1, 15), LENGTH_WEIGHTS)[0]
            words.add("".join(rnd.choices(LETTERS, LETTER_WEIGHTS, k=n)))
        self.words = sorted(words, key=lambda w: (len(w), w))
        rnd.shuffle(self.words)
        cum, total = [], 0.0
        for rank in range(1, VOCABULARY + 1):
            total += 1.0 / rank
            cum.append(total)
        self.cum = cum
        self.sentences = [self.sentence(rnd) for _i in range(SENTENCES)]

    def pick(self, rnd, k):
        return rnd.choices(self.words, cum_weights=self.cum, k=k)

    def sentence(self, rnd):
        words = self.pick(rnd, rnd.randint(4, 24))
        if rnd.random() < 0.3:
            words[rnd.randrange(len(words))] += ","
        return " ".join(words).capitalize() + rnd.choice("....?!")

    def paragraphs(self, rnd, low, high):
        return "\\n\\n".join(
            " ".join(rnd.choices(self.sentences, k=rnd.randint(2, 7))) for _i in range(rnd.randint(low, high))
        )


def when(rnd):
    return EPOCH + timedelta(seconds=rnd.randrange(SPAN), microseconds=rnd.randrange(1_000_000))


def ts(d):
    return d.strftime("%Y-%m-%d %H:%M:%S.%f")


def ip(rnd):
    return ".".join(str(rnd.randrange(1, 255)) for _i in range(4))


def users(text, rnd, first, last, out):
    alphabet = string.ascii_letters + string.digits
    for i in range(first, last):
        salt = "".join(rnd.choices(alphabet, k=22))
        digest = base64.b64encode(rnd.randbytes(32)).decode()
        name = text.pick(rnd, 2)
        username = f"{name[0]}{name[1][:3]}{i}"
        joined = when(rnd)
        seen = "\\N" if rnd.random() < 0.1 else ts(joined + timedelta(seconds=rnd.randrange(86400 * 300)))
        staff = int(rnd.random() < 0.01)
        out.write(
            f"{i}\tpbkdf2_sha256$600000${salt}${digest}\t{seen}\t0\t{username}\t{name[0].capitalize()}\t"
            f"{name[1].capitalize()}\t{username}@{rnd.choice(text.words)}.example\t{staff}\t"
            f"{int(rnd.random() > 0.05)}\t{ts(joined)}\n"
        )


def sessions(text, rnd, first, last, out):
    for i in range(first, last):
        key = "".join(rnd.choices(string.ascii_lowercase + string.digits, k=32)) + f"{i:08x}"
        payload = base64.b64encode(rnd.randbytes(rnd.randint(120, 640))).decode()
        out.write(f"{key}\t{payload}:{base64.urlsafe_b64encode(rnd.randbytes(20)).decode()}\t{ts(when(rnd))}\n")


def articles(text, rnd, first, last, out, n_users):
    for i in range(first, last):
        title = " ".join(text.pick(rnd, rnd.randint(3, 11))).capitalize()
        slug = "-".join(title.lower().split()[:8])[:200] + f"-{i}"
        created = when(rnd)
        updated = created + timedelta(seconds=rnd.randrange(86400 * 90))
        meta = {
            "tags": text.pick(rnd, rnd.randint(0, 6)),
            "reading_minutes": rnd.randint(1, 40),
            "lang": rnd.choice(["en", "de", "fr", "zh", "es", "pt"]),
            "score": round(rnd.random() * 5, 3),
            "source": {"ip": ip(rnd), "agent": rnd.choice(USER_AGENTS)},
            "revision": rnd.randint(1, 30),
            "featured": rnd.random() < 0.05,
        }
        if rnd.random() < 0.3:
            meta["canonical"] = f"https://{rnd.choice(text.words)}.example/{slug}"
        out.write(
            f"{i}\t{rnd.randbytes(16).hex()}\t{rnd.randint(1, n_users)}\t{title}\t{slug}\t"
            f"{text.paragraphs(rnd, 2, 7)}\t{json.dumps(meta)}\t{rnd.choice(['draft', 'published', 'published'])}\t"
            f"{int(rnd.expovariate(1 / 800))}\t{ts(created)}\t{ts(updated)}\n"
        )


def comments(text, rnd, first, last, out, n_users, n_articles):
    for i in range(first, last):
        meta = {"ip": ip(rnd), "approved": rnd.random() < 0.9, "likes": int(rnd.expovariate(1 / 4))}
        if rnd.random() < 0.2:
            meta["edited"] = ts(when(rnd))
        out.write(
            f"{i}\t{rnd.randint(1, n_articles)}\t{rnd.randint(1, n_users)}\t"
            f"{text.paragraphs(rnd, 1, 2)}\t{json.dumps(meta)}\t{ts(when(rnd))}\n"
        )


def write_part(args):
    table, part, first, last, out_dir, n = args
    text = Text()
    rnd = random.Random(f"{SEED}-{table}-{part}")
    path = os.path.join(out_dir, f"{table}.{part}.tsv")
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        if table == "auth_user":
            users(text, rnd, first, last, out)
        elif table == "django_session":
            sessions(text, rnd, first, last, out)
        elif table == "blog_article":
            articles(text, rnd, first, last, out, n["auth_user"])
        else:
            comments(text, rnd, first, last, out, n["auth_user"], n["blog_article"])
    return path


def main(argv):
    out_dir, size_mb = argv[1], float(argv[2])
    jobs = int(argv[3]) if len(argv) > 3 else os.cpu_count() or 1
    os.makedirs(out_dir, exist_ok=True)
    n = counts(size_mb)
    tasks = []
    for table, rows in n.items():
        parts = max(1, min(jobs * 2, rows // 20_000))
        step = -(-rows // parts)
        for part in range(parts):
            first = 1 + part * step
            last = min(rows, (part + 1) * step) + 1
            if first < last:
                tasks.append((table, part, first, last, out_dir, n))
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(write_part, tasks))
    json.dump(n, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
