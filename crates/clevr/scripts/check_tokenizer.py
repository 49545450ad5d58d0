"""Checks a tokenizer.json written by film-rs with the Python `tokenizers` package.

    cargo run -p clevr --example build_vocab -- fixtures/clevr-mini /tmp/clevr-vocab
    python3 crates/clevr/scripts/check_tokenizer.py /tmp/clevr-vocab

Every val question must get the same ids from Python as from Rust, and the same
ids as the CLEVR reference preprocessing rule re-stated here (`;` and `,` as
tokens, `?` and `.` removed, whitespace split, <START>/<END> around).
Exits non-zero on any difference.
"""
import json
import sys

from tokenizers import Tokenizer


def reference_ids(text, vocab):
    for p in ";,":
        text = text.replace(p, " %s " % p)
    for p in "?.":
        text = text.replace(p, "")
    words = ["<START>"] + text.split() + ["<END>"]
    return [vocab.get(w, vocab["<UNK>"]) for w in words]


def main(out_dir):
    tokenizer = Tokenizer.from_file(f"{out_dir}/tokenizer.json")
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in ["<NULL>", "<START>", "<END>", "<UNK>"]] == [0, 1, 2, 3]
    cases = json.load(open(f"{out_dir}/val_ids.json"))
    bad = 0
    for case in cases:
        python = tokenizer.encode(case["question"]).ids
        rule = reference_ids(case["question"], vocab)
        if not (python == case["ids"] == rule):
            bad += 1
            print(f"{case['question']!r}: rust {case['ids']} python {python} rule {rule}")
    print(f"{len(cases) - bad}/{len(cases)} questions agree (Rust, Python tokenizers, reference rule)")
    return 1 if bad or not cases else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
