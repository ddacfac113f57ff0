"""The staged forward is the ordinary forward cut at the exits, and exited pages stop."""

from __future__ import annotations

import pytest
import torch

from classifier.policy import MaxSoftmax
from classifier.predict import predict_pages
from classifier.state import StageState


def test_staged_final_logits_equal_full_forward(model, pages):
    inputs = model.encode(pages)
    with torch.no_grad():
        staged, _ = model.all_exit_logits(inputs)
        full = model.full_forward_logits(inputs)
    assert len(staged) == model.num_stages == model.config.num_hidden_layers + 1
    torch.testing.assert_close(staged[-1], full, atol=1e-5, rtol=1e-5)


def test_advance_runs_only_layers_between_exits(pages, make_model):
    model = make_model("every_other")
    assert model.exit_layers == [0, 2, 4]
    calls = [0] * model.config.num_hidden_layers
    for i, layer in enumerate(model.backbone.encoder.layer):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    with torch.no_grad():
        state = model.embed(model.encode(pages))
        assert state.stage == 0 and sum(calls) == 0
        _, state = model.advance(state)
    assert state.stage == 1 and calls == [1, 1, 0, 0]


def test_exited_pages_are_not_computed_further(model, pages):
    """Count the rows each encoder layer sees: pages that exit at stage 0 never reach a layer."""
    rows = [0] * model.config.num_hidden_layers
    for i, layer in enumerate(model.backbone.encoder.layer):
        layer.register_forward_hook(
            lambda _m, args, _o, i=i: rows.__setitem__(i, rows[i] + args[0].shape[0])
        )
    with torch.no_grad():
        conf0 = model.calibrated_probs(0, model.exit_logits(model.embed(model.encode(pages))))
    top0 = conf0.max(-1).values
    # threshold between the confidences: exactly the pages above it exit at stage 0
    cut = float(top0.sort().values[len(pages) // 2])
    policy = MaxSoftmax(model.num_stages, [cut] + [2.0] * (model.num_stages - 2) + [0.0])
    preds = predict_pages(model, pages, policy=policy, batch_size=len(pages))
    early = sum(p.exit_stage == 0 for p in preds)
    assert early == int((top0 >= cut).sum()) and 0 < early < len(pages)
    assert rows == [len(pages) - early] * model.config.num_hidden_layers
    assert all(p.exit_layer == (0 if p.exit_stage == 0 else 4) for p in preds)
    assert all(len(p.trail) == p.exit_stage + 1 for p in preds)


def test_full_depth_prediction_matches_staged_final_exit(model, pages):
    preds = predict_pages(model, pages, early_exit=False, batch_size=5)
    with torch.no_grad():
        logits, _ = model.all_exit_logits(model.encode(pages))
    probs = model.calibrated_probs(model.num_stages - 1, logits[-1])
    assert [p.label for p in preds] == [model.label_names[i] for i in probs.argmax(-1).tolist()]
    assert all(p.exit_stage == model.num_stages - 1 for p in preds)
    assert torch.allclose(
        torch.tensor([p.confidence for p in preds]), probs.max(-1).values, atol=1e-5
    )


def test_select_and_cat_round_trip(model, pages):
    with torch.no_grad():
        first = model.embed(model.encode(pages[:5]))
        second = model.embed(model.encode(pages[5:]))
        both = StageState.cat([first, second])
        assert len(both) == len(pages)
        parts = [
            both.select([0, 2]),
            both.select(torch.tensor([1, 3, 4])),
            both.select(torch.arange(5, len(pages))),
        ]
        regrouped = StageState.cat(parts)
        order = [0, 2, 1, 3, 4, *range(5, len(pages))]
        ref = both.select(order)
        for name in StageState._TENSORS:
            got, want = getattr(regrouped, name), getattr(ref, name)
            assert (got is None) == (want is None), name
            assert got is None or torch.equal(got, want), name
        # a regrouped batch advances to the same logits as each page alone
        logits, _ = model.advance(regrouped)
        alone, _ = model.advance(model.embed(model.encode([pages[2]])))
    torch.testing.assert_close(logits[1:2], alone, atol=1e-5, rtol=1e-5)


def test_gather_copies_the_same_rows_as_select_then_cat(model, pages):
    """The stage batcher forms deep batches with `gather` (parked rows copied once): the batch
    must be exactly the select+cat one, at stage 0 (boxes) and past it (attention bias)."""
    with torch.no_grad():
        s0 = model.embed(model.encode(pages[:5]))
        t0 = model.embed(model.encode(pages[5:]))
        for a, b in ((s0, t0), (model.advance(s0)[1], model.advance(t0)[1])):
            got = StageState.gather([(a, [3, 0]), (b, None), (a, [4])])
            want = StageState.cat([a.select([3, 0]), b, a.select([4])])
            assert got.stage == want.stage
            for name in StageState._TENSORS:
                g, w = getattr(got, name), getattr(want, name)
                assert (g is None) == (w is None), name
                assert g is None or torch.equal(g, w), name
        with pytest.raises(ValueError, match="different stages"):
            StageState.gather([(s0, None), (model.advance(t0)[1], [0])])


def test_cat_refuses_mixed_stages(model, pages):
    with torch.no_grad():
        a = model.embed(model.encode(pages[:2]))
        _, b = model.advance(model.embed(model.encode(pages[2:4])))
    try:
        StageState.cat([a, b])
    except ValueError as e:
        assert "different stages" in str(e)
    else:
        raise AssertionError("mixed stages concatenated")


def test_encode_is_deterministic_and_handles_empty_pages(model, pages):
    from classifier.inputs import PageInput

    blank = PageInput([], [], pages[0].image)
    a = model.encode([*pages[:3], blank])
    b = model.encode([*pages[:3], blank])
    for k in a:
        assert torch.equal(a[k], b[k])
    assert a["input_ids"].shape == (4, model.preprocessing.max_text_len)
    assert int(a["attention_mask"][3].sum()) <= 3  # <s> </s> (and maybe one empty-word token)


def test_position_bias_is_transformers_bias_exactly(model, pages):
    """The one summed bias equals transformers' 1D + 2D biases bit for bit, at a fraction of
    the bytes a parked page carries (one tensor instead of two)."""
    inputs = model.encode(pages)
    bb = model.backbone
    with torch.no_grad():
        state = model.embed(inputs)
        visual = bb.calculate_visual_bbox("cpu", dtype=torch.long, batch_size=len(pages))
        boxes = torch.cat([inputs["bbox"], visual], dim=1)
        text_len = inputs["input_ids"].shape[1]
        positions = torch.cat(
            [torch.arange(text_len), torch.arange(boxes.shape[1] - text_len)]
        ).repeat(len(pages), 1)
        reference = bb.encoder._cal_1d_pos_emb(positions) + bb.encoder._cal_2d_pos_emb(boxes)
    assert torch.equal(model.position_bias(state), reference)
    assert reference.shape == (len(pages), model.config.num_attention_heads,
                               model.seq_len, model.seq_len)


def test_bias_is_built_at_the_first_advance_not_for_pages_leaving_at_stage_0(model, pages):
    """A page that leaves at the pre-encoder exit never pays for the attention bias, and a
    state parked at stage 0 carries boxes, not the bias; after the first advance it is the
    other way round, and the bias is what the layers were given."""
    with torch.no_grad():
        state = model.embed(model.encode(pages[:3]))
        assert state.position_bias is None and state.layout is not None
        expected = model.position_bias(state)
        _, after = model.advance(state)
    assert after.layout is None
    assert torch.equal(after.position_bias, expected)
    assert torch.equal(model.position_bias(after), expected)
