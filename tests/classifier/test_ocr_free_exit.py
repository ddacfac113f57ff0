"""The OCR-free exit: pages read without their words (classifier/textless.py), by the raster
exit or by a model taught with word dropout, calibrated against the full-depth answer with
words, saved in the bundle."""

from __future__ import annotations

import random

import torch
from conftest import LABELS, make_page
from PIL import Image, ImageDraw

from classifier.bundle import load_bundle, save_bundle
from classifier.calibrate import calibrate_ocr_free
from classifier.inputs import PageInput
from classifier.raster_training import train_raster_exit
from classifier.textless import empty_text, ocr_free_answers, ocr_free_logits, without_text
from classifier.thresholds import ThresholdRule
from classifier.training import TrainOptions, all_logits, train


def test_without_text_replaces_the_words_of_the_chosen_pages_only(model, page_factory):
    pages, _ = page_factory(4, seed=1)
    inputs = model.encode(pages)
    padded = empty_text(model, trimmed=False)
    rows = torch.tensor([True, False, True, False])
    out = without_text(inputs, padded, rows)
    for key in ("input_ids", "bbox", "attention_mask"):
        assert torch.equal(out[key][1], inputs[key][1]) and torch.equal(out[key][3], inputs[key][3])
        assert torch.equal(out[key][0], padded[key][0]) and torch.equal(out[key][2], padded[key][0])
    assert torch.equal(out["pixel_values"], inputs["pixel_values"])  # the raster stays
    # The OCR-free pass: every page, the short sequence ([CLS] [SEP] and nothing else).
    short = without_text(inputs, empty_text(model))
    assert short["input_ids"].shape == (4, 2) and int(short["attention_mask"].sum()) == 8


def _drawn_pages(count: int, seed: int) -> tuple[list[PageInput], torch.Tensor]:
    """Pages whose class shows in their layout (a block where the class puts it) as well as in
    their words."""
    rng = random.Random(seed)
    blocks = [(5, 70, 80, 105), (5, 5, 45, 40), (60, 5, 80, 105)]  # one per conftest label
    pages, labels = [], []
    for i in range(count):
        label = i % 3
        page = make_page(LABELS[label], rng)
        image = Image.new("RGB", (85, 110), "white")
        x0, y0, x1, y1 = blocks[label]
        jitter = rng.randint(-3, 3)
        ImageDraw.Draw(image).rectangle((x0 + jitter, y0, x1 + jitter, y1), fill=(30, 30, 30))
        pages.append(PageInput(page.words, page.boxes, image))
        labels.append(label)
    return pages, torch.tensor(labels)


def test_word_dropout_teaches_the_model_pages_without_words(make_model, tmp_path):
    """Classes show in the page's layout as well as its words: with word dropout the model
    learns to tell them apart from the raster alone, and the exit is calibrated, saved and
    used."""
    pages, labels = _drawn_pages(60, seed=3)
    val_pages, val_labels = _drawn_pages(30, seed=4)
    model = make_model()
    x, xv = model.encode(pages), model.encode(val_pages)
    opts = TrainOptions(epochs=4, batch_size=8, lr=2e-3, seed=0, progress=False,
                        text_dropout=0.5)
    train(model, x, labels, xv, val_labels, opts, checkpoint_dir=tmp_path / "ck")
    model.eval()
    textless = ocr_free_logits(model, xv)
    assert float((textless.argmax(-1) == val_labels).double().mean()) >= 0.8

    full = all_logits(model, xv)[:, -1].argmax(-1)
    record = calibrate_ocr_free(model, textless, full, val_labels,
                                ThresholdRule(budget=0.1, selection="point"))
    assert model.ocr_free == {"temperature": record["temperature"],
                              "threshold": record["threshold"]}
    assert record["ocr_avoided_share"] > 0.5
    assert record["disagreements"] <= 0.1 * len(val_labels)

    save_bundle(model, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.ocr_free == model.ocr_free
    answers = ocr_free_answers(loaded, [p.image for p in val_pages])
    share = sum(a.exits for a in answers) / len(answers)
    assert abs(share - record["ocr_avoided_share"]) < 1e-9
    assert all(a.exits == (a.confidence >= record["threshold"]) for a in answers)


def test_the_raster_exit_learns_layout_and_answers_without_words(make_model, tmp_path):
    """No word dropout: the raster exit alone learns where each class puts its block, trains
    with the other exits, travels in the bundle and is what the OCR-free pass asks."""
    pages, labels = _drawn_pages(60, seed=3)
    val_pages, val_labels = _drawn_pages(30, seed=4)
    model = make_model(raster_width=8)
    x, xv = model.encode(pages), model.encode(val_pages)
    opts = TrainOptions(epochs=6, batch_size=8, lr=2e-3, seed=0, progress=False)
    train(model, x, labels, xv, val_labels, opts, checkpoint_dir=tmp_path / "ck")
    model.eval()
    raster = ocr_free_logits(model, xv)
    assert torch.equal(raster, model.raster_exit(xv["pixel_values"]))
    assert float((raster.argmax(-1) == val_labels).double().mean()) >= 0.8

    full = all_logits(model, xv)[:, -1].argmax(-1)
    record = calibrate_ocr_free(model, raster, full, val_labels,
                                ThresholdRule(budget=0.2, selection="point"))
    assert record["threshold"] is not None
    save_bundle(model, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.raster_exit is not None and loaded.raster_exit.width == 8
    assert torch.equal(ocr_free_logits(loaded, xv), raster)  # same weights
    answers = ocr_free_answers(loaded, [p.image for p in val_pages])
    assert abs(sum(a.exits for a in answers) / 30 - record["ocr_avoided_share"]) < 1e-9


def test_the_raster_exits_own_epochs_train_it_alone(make_model):
    """After the joint epochs: only the raster exit's weights move, and it learns the layout."""
    pages, labels = _drawn_pages(60, seed=3)
    val_pages, val_labels = _drawn_pages(30, seed=4)
    model = make_model(raster_width=8)
    x, xv = model.encode(pages), model.encode(val_pages)
    others = {k: v.clone() for k, v in model.state_dict().items() if "raster_exit" not in k}
    losses = train_raster_exit(model, x["pixel_values"], labels,
                               TrainOptions(raster_epochs=15, raster_lr=3e-3))
    assert len(losses) == 15 and losses[-1] < losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in others.items())
    assert not model.raster_exit.training
    assert float((ocr_free_logits(model, xv).argmax(-1) == val_labels).double().mean()) >= 0.8
    assert train_raster_exit(make_model(), x["pixel_values"], labels, TrainOptions()) == []


def test_no_threshold_that_holds_the_budget_means_no_ocr_free_exit(model):
    # 10 pages: no upper bound at delta 0.1 gets under 0.5% even with no disagreement
    logits = torch.randn(10, model.num_labels)
    labels = logits.argmax(-1)
    record = calibrate_ocr_free(model, logits, labels, labels, ThresholdRule(0.005))
    assert record["threshold"] is None and model.ocr_free is None and "note" in record
    assert all(not a.exits for a in ocr_free_answers(model, []))
    assert calibrate_ocr_free(model, logits[:0], labels[:0], labels[:0])["validation_pages"] == 0


def test_a_bundle_without_the_exit_never_skips_ocr(model, page_factory, tmp_path):
    save_bundle(model, tmp_path / "b")
    assert "ocr_free" not in (tmp_path / "b" / "exits.json").read_text()
    loaded = load_bundle(tmp_path / "b")
    assert loaded.ocr_free is None
    pages, _ = page_factory(3, seed=2)
    assert [a.exits for a in ocr_free_answers(loaded, [p.image for p in pages])] == [False] * 3
