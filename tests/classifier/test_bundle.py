"""Bundles round-trip exactly, refuse pickle, and LayoutLMv3 checkpoint directories load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LayoutLMv3Config, LayoutLMv3Model

from classifier.bundle import BundleError, from_checkpoint, load_bundle, save_bundle
from classifier.predict import predict_pages


def tiny_layoutlmv3_config(num_hidden_layers: int, intermediate_size: int,
                           **fields: int) -> LayoutLMv3Config:
    """A LayoutLMv3 config small enough to build in a test (48 wide, 2 heads); `fields` sets the
    rest (vocab size, positions, image input)."""
    return LayoutLMv3Config(
        hidden_size=48,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=intermediate_size,
        coordinate_size=8,
        shape_size=8,
        **fields,
    )


def test_round_trip_gives_identical_outputs(model, pages, tmp_path):
    model.temperatures.copy_(torch.linspace(0.5, 2.0, model.num_stages))
    model.thresholds = [0.9] * (model.num_stages - 1) + [0.0]
    model.policy_spec = {"name": "max_softmax", "thresholds": model.thresholds}
    save_bundle(model, tmp_path / "b", name="tiny")
    assert model.version.startswith("tiny-")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.version == model.version
    assert loaded.exit_layers == model.exit_layers and loaded.label_names == model.label_names
    assert torch.equal(loaded.temperatures, model.temperatures)
    a, b = model.encode(pages), loaded.encode(pages)
    for k in a:
        assert torch.equal(a[k], b[k])
    with torch.no_grad():
        la, _ = model.all_exit_logits(a)
        lb, _ = loaded.all_exit_logits(b)
    for x, y in zip(la, lb, strict=True):
        assert torch.equal(x, y)
    assert predict_pages(model, pages) == predict_pages(loaded, pages)
    doc = json.loads((tmp_path / "b" / "exits.json").read_text())
    assert {
        "exit_layers",
        "temperatures",
        "thresholds",
        "policy",
        "label_names",
        "version",
        "preprocessing",
        "heads",
    } <= set(doc)
    assert not any(p.suffix in {".bin", ".pt", ".pkl", ".pth"} for p in (tmp_path / "b").rglob("*"))


@pytest.mark.parametrize(("dtype", "share", "atol"), [(torch.float16, 0.55, 1e-2),
                                                     (torch.int8, 0.3, 5e-2)])
def test_smaller_weights_load_as_float32_with_the_same_answers(
    model, pages, tmp_path, dtype, share, atol
):
    """float16: half the size; int8 with a scale per row: about a quarter. Either loads back
    into a float32 model whose answers stay those of the original."""
    save_bundle(model, tmp_path / "full")
    save_bundle(model, tmp_path / "small", weights_dtype=dtype)
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    small = (tmp_path / "small" / "model.safetensors").stat().st_size
    assert small < share * full
    loaded = load_bundle(tmp_path / "small")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        la, _ = model.eval().all_exit_logits(model.encode(pages))
        lb, _ = loaded.all_exit_logits(loaded.encode(pages))
    assert torch.allclose(la[-1], lb[-1], atol=atol)
    assert torch.equal(la[-1].argmax(-1), lb[-1].argmax(-1))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "extra.pkl", "x.pth"])
def test_pickle_bearing_bundle_is_refused(model, tmp_path, name):
    save_bundle(model, tmp_path / "b")
    (tmp_path / "b" / name).write_bytes(b"\x80\x04not really")
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(tmp_path / "b")


def test_missing_exits_json_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path / "x")


def test_layoutlmv3_checkpoint_directory_loads_with_its_tokenizer(model, pages, tmp_path):
    """A tiny random LayoutLMv3 saved in save_pretrained layout, plus its tokenizer, becomes
    the backbone of an early-exit model whose staged forward matches the full one."""
    ckpt = tmp_path / "ckpt"
    config = tiny_layoutlmv3_config(3, 64, vocab_size=len(model.tokenizer),
                                    max_position_embeddings=80, input_size=32, patch_size=16)
    torch.manual_seed(0)
    LayoutLMv3Model(config).save_pretrained(str(ckpt), safe_serialization=True)
    model.tokenizer.save_pretrained(str(ckpt))
    (ckpt / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": [0.4, 0.4, 0.4],
                "image_std": [0.3, 0.3, 0.3],
                "size": {"height": 32, "width": 32},
            }
        )
    )
    ee = from_checkpoint(ckpt, ["a", "b"], [0, 2, 3], max_text_len=40).eval()
    assert ee.preprocessing.image_size == 32 and ee.preprocessing.image_mean == (0.4, 0.4, 0.4)
    ref = LayoutLMv3Model.from_pretrained(str(ckpt))
    for name, p in ref.state_dict().items():
        assert torch.equal(p, ee.backbone.state_dict()[name])
    inputs = ee.encode(pages[:4])
    with torch.no_grad():
        staged, _ = ee.all_exit_logits(inputs)
        full = ee.full_forward_logits(inputs)
    torch.testing.assert_close(staged[-1], full, atol=1e-5, rtol=1e-5)
    save_bundle(ee, tmp_path / "bundle")
    again = load_bundle(tmp_path / "bundle")
    with torch.no_grad():
        torch.testing.assert_close(again.all_exit_logits(again.encode(pages[:4]))[0][-1], full)


def test_checkpoint_with_only_pickle_weights_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    tiny_layoutlmv3_config(1, 32).save_pretrained(ckpt)
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BundleError, match="pickle"):
        from_checkpoint(ckpt, ["a", "b"], [0, 1])
