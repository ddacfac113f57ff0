"""Plain-text tables for people (the `audit` commands): decoded, shortened document paths,
3-decimal numbers, times to the second, long lists wrapped inside their cell. JSON and CSV keep
the stored values; only what a person reads goes through here. Standard library only: commands
import this on every start."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlparse

WRAP = 60  # characters per line of a wrapped list cell


def printable(text: str) -> str:
    """Control characters (a key may hold any) shown as escapes, never sent to the terminal."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch).startswith("C")
        else ch
        for ch in text
    )


def decoded(uri: str) -> str:
    """A stored document URI as a person writes it: file:// URIs as the decoded path,
    s3://bucket/key with the key decoded; anything else as stored."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        return f"s3://{bucket}/{unquote(key)}"
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return uri
    # the path's bytes; a name that is not UTF-8 shows its bytes escaped (\xe9), never U+FFFD
    return unquote_to_bytes(parsed.path).decode("utf-8", "backslashreplace")


def source_root(uris: Iterable[str]) -> str | None:
    """The deepest folder (or s3://bucket/prefix/) holding every document, when all are of one
    kind and share more than the bare root; None otherwise."""
    paths = [decoded(u) for u in uris]
    if not paths:
        return None
    if all(p.startswith("s3://") for p in paths):
        buckets = {p[len("s3://"):].split("/", 1)[0] for p in paths}
        if len(buckets) != 1:
            return None
        folders = [p.rsplit("/", 1)[0] for p in paths]
        common = os.path.commonpath([f[len("s3://"):] for f in folders])
        return f"s3://{common}/"
    if all(p.startswith("/") for p in paths):
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
        return None if common == "/" else common.rstrip("/") + "/"
    return None


def document(uri: str, root: str | None) -> str:
    """The document's path, relative to `root` when it lies under it."""
    path = decoded(uri)
    if root and path.startswith(root):
        path = path[len(root):]
    return printable(path)


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def when(value: str | datetime | None) -> str:
    """An ISO timestamp to the second, in the zone it was stored in (the store keeps UTC)."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def counts(values: Mapping[str, int], sep: str = " ", width: int = WRAP) -> str:
    """`name n, name n, ...` wrapped at `width` characters (lines joined by newlines; the
    table puts each on its own line inside the cell)."""
    if not values:
        return "-"
    lines: list[str] = []
    for item in (f"{printable(str(k))}{sep}{v}" for k, v in values.items()):
        # break only between items: "name n" never splits across lines
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += f", {item}"
        else:
            if lines:
                lines[-1] += ","
            lines.append(item)
    return "\n".join(lines)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Iterable[int] = ()
) -> str:
    """Columns padded to their widest line; a cell with newlines spans several lines of its
    row; columns in `right` (numbers) are right-aligned."""
    right_cols = set(right)
    cells = [[str(c).split("\n") for c in row] for row in rows]
    widths = [
        max([len(h), *(len(line) for row in cells for line in row[i])])
        for i, h in enumerate(headers)
    ]

    def line(parts: Sequence[str]) -> str:
        return "  ".join(
            p.rjust(w) if i in right_cols else p.ljust(w)
            for i, (p, w) in enumerate(zip(parts, widths, strict=True))
        ).rstrip()

    out = [line(headers)]
    for row in cells:
        height = max(len(c) for c in row)
        for k in range(height):
            out.append(line([c[k] if k < len(c) else "" for c in row]))
    return "\n".join(out)


# --- the audit commands' tables ----------------------------------------------------------------
# Column names say which pass a number belongs to: `exit stage` is always where the EARLY pass
# left (as `doctriage run` reports it); a full-depth answer is named as such.


def answer(which: str) -> str:
    return "full depth" if which == "full" else which


def summary_text(result: Mapping[str, Any]) -> str:
    groups = result["groups"]
    t = result["total"]
    total = (
        f"total: {t['pages']} pages, re-routed to full depth {t['rerouted']} "
        f"({percent(t['reroute_rate'])}), "
        f"mean confidence of the early pass {number(t['mean_confidence'])}, "
        f"early exit stages {counts(t['exit_stages'], ': ', width=10**6)}"
    )
    ocr = t.get("ocr") or {}
    if ocr.get("needed"):  # pages without a usable text layer: how many never paid for OCR
        total += (
            f"\nOCR avoided (answered by the OCR-free exit) for {ocr['avoided']} of "
            f"{ocr['needed']} pages that needed OCR ({percent(ocr['avoided_share'])}); "
            "by final class: " + ", ".join(
                f"{printable(k)} {c['avoided']}/{c['needed']}" for k, c in ocr["classes"].items())
        )
    if not groups:
        return "no predictions match\n" + total
    rows = [
        [
            printable(g["model_version"]),
            g["day"],
            g["pages"],
            f"{g['rerouted']} ({percent(g['reroute_rate'])})",
            number(g["mean_confidence"]),
            counts(g["exit_stages"], ": ", width=30),
            counts(g["classes"]),
        ]
        for g in groups
    ]
    headers = ["model version", "day (UTC)", "pages", "re-routed", "mean conf (early)",
               "early exit stage: pages", "final class: pages"]
    return table(headers, rows, right=(2, 4)) + "\n" + total


def low_confidence_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no pages below the bar"
    root = source_root(r["document_uri"] for r in rows)
    body = [
        [
            r["page_id"],
            document(r["document_uri"], root),
            r["page_number"],
            printable(r["label"]),
            number(r["confidence"]),
            r["exit_stage"],
            answer(r["pass_name"]),
            printable(r["model_version"]),
            when(r["created_at"]),
        ]
        for r in rows
    ]
    headers = ["page_id", "document", "page", "class", "confidence", "early exit stage",
               "answer", "model version", "classified (UTC)"]
    lines = [f"documents under {printable(root)}"] if root else []
    lines += [
        table(headers, body, right=(0, 2, 4, 5)),
        "answer: the pass whose class and confidence are shown; "
        "correct one with: doctriage audit label PAGE_ID CLASS",
    ]
    return "\n".join(lines)


def reroutes_text(result: Mapping[str, Any]) -> str:
    groups = result["groups"]
    if not groups:
        return "no re-routed pages match"
    rows = [
        [g["exit_stage"], printable(g["class"]), g["pages"], g["agree"], percent(g["agreement"])]
        for g in groups
    ]
    headers = ["early exit stage", "early class", "pages", "full depth agrees", "agreement"]
    t = result["total"]
    return (
        table(headers, rows, right=(0, 2, 3, 4))
        + f"\ntotal: {t['pages']} re-routed pages, agreement {percent(t['agreement'])} "
        f"(the full-depth class is the early one on {t['agree']})"
    )


def calibration_text(result: Mapping[str, Any]) -> str:
    groups = result["groups"]
    if not groups:
        return "no human-labelled pages match"
    rows = [
        [answer(g["pass"]), g["exit_stage"], g["pages"], number(g["accuracy"]),
         number(g["mean_confidence"]), number(g["ece"])]
        for g in groups
    ]
    headers = ["answer", "early exit stage", "pages", "accuracy", "mean conf", "ECE"]
    lines = [table(headers, rows, right=(1, 2, 3, 4, 5))]
    for name, c in result["total"].items():
        lines.append(
            f"total {answer(name)}: {c['pages']} pages, accuracy {number(c['accuracy'])}, "
            f"mean confidence {number(c['mean_confidence'])}, ECE {number(c['ece'])}"
        )
    lines.append("full depth rows: pages re-routed from that early exit stage, answered at full "
                 f"depth; accuracy against the newest human label; ECE over {result['bins']} bins")
    return "\n".join(lines)


LOSS_HEADERS = {"day": "day (UTC)", "class": "early class", "stage": "early exit stage",
                "source": "source", "version": "policy version"}


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"  # a loss budget is a fraction of a percent


def _interval(e: Mapping[str, Any]) -> str:
    if e["estimate"] is None:
        return "-"
    return f"{_share(e['estimate'])} [{_share(e['lower'])}, {_share(e['upper'])}]"


def loss_text(result: Mapping[str, Any]) -> str:
    t, by = result["total"], result["by"]
    total = (
        f"audit sample: {t['pages']} pages, early answer differs from full depth on "
        f"{t['differ']}: estimated loss {_interval(t)} (95% Wilson interval); "
        f"budget {_share(result['budget'])}"
    )
    if not t["pages"]:
        total = "no audit-sampled page with both answers matches\n" + total
    if by is None or not result["groups"]:
        return total
    rows = [
        [printable(str(g[by])), g["pages"], g["differ"], _interval(g)] for g in result["groups"]
    ]
    headers = [LOSS_HEADERS[by], "pages", "differ", "loss [95% interval]"]
    return table(headers, rows, right=(1, 2)) + "\n" + total
