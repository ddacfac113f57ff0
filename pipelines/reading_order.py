"""Reading order for text-layer words: lines top to bottom, words left to right in a line.

Content-stream order is whatever the producing program wrote (often by font or by object), so it
is re-sorted. Tesseract output keeps its own block/paragraph/line order, which is already a
reading order.
"""

from __future__ import annotations

Box = tuple[int, int, int, int]


def sort_reading_order(words: list[str], boxes: list[Box]) -> tuple[list[str], list[Box]]:
    if len(words) < 2:
        return list(words), list(boxes)
    order = sorted(range(len(words)), key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
    lines: list[list[int]] = []
    line_mid = line_h = 0.0
    for i in order:
        y0, y1 = boxes[i][1], boxes[i][3]
        mid, h = (y0 + y1) / 2, max(1, y1 - y0)
        # A word joins the current line when its middle sits within half a line height of it.
        if lines and abs(mid - line_mid) <= 0.5 * max(line_h, h):
            lines[-1].append(i)
            n = len(lines[-1])
            line_mid += (mid - line_mid) / n
            line_h += (h - line_h) / n
        else:
            lines.append([i])
            line_mid, line_h = mid, h
    ordered = [i for line in lines for i in sorted(line, key=lambda i: boxes[i][0])]
    return [words[i] for i in ordered], [boxes[i] for i in ordered]
