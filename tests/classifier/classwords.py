"""Words by class for the classifier tests' made-up pages and PDFs: one list per class, so the
tests that train on hand-made pages (conftest.py) and on generated PDFs (test_train_command.py)
draw from the same vocabulary."""

from __future__ import annotations

CLASS_WORDS: dict[str, list[str]] = {
    "invoice": [
        "invoice",
        "total",
        "amount",
        "due",
        "net",
        "tax",
        "vat",
        "item",
        "qty",
        "price",
        "balance",
    ],
    "letter": [
        "dear",
        "sincerely",
        "regards",
        "yours",
        "madam",
        "sir",
        "truly",
        "writing",
        "thank",
        "hope",
    ],
    "receipt": [
        "cash",
        "change",
        "paid",
        "store",
        "thank",
        "visit",
        "card",
        "receipt",
        "till",
        "cashier",
    ],
    "memo": [
        "memo",
        "to",
        "from",
        "subject",
        "cc",
        "date",
        "re",
        "attached",
        "meeting",
        "staff",
        "please",
        "note",
    ],
}
