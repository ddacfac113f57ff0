"""Save and load a model bundle: a directory loadable with one call.

    config.json        LayoutLMv3 backbone config (transformers layout)
    model.safetensors  backbone + exit heads (safetensors only: a bundle never holds pickle)
    tokenizer files    as saved by the tokenizer's save_pretrained
    exits.json         exit layers, head types, per-exit temperature/threshold, policy, labels,
                       version, preprocessing, the training data split, and the cheaper policy
                       used under backlog pressure ("pressure", when fitted)

`from_checkpoint` starts a model from any LayoutLMv3 checkpoint directory in save_pretrained
layout (safetensors weights) with its tokenizer and, if present, its image processor settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import LayoutLMv3Config, LayoutLMv3Model

from classifier.model import DEFAULT_POOLING, EarlyExitModel, Pooling, Preprocessing
from classifier.tokenizer import load_tokenizer
from classifier.weight_storage import pack, unpack

FORMAT = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pkl", ".pth", ".pickle", ".ckpt")


class BundleError(ValueError):
    """A bundle or checkpoint that cannot (or must not) be loaded; the message is one line."""


def refuse_pickle(path: Path) -> None:
    found = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise BundleError(
            f"{path}: refusing to load pickle files ({', '.join(found[:3])}); "
            "convert the weights to safetensors"
        )


def save_bundle(
    model: EarlyExitModel,
    path: Path | str,
    *,
    name: str | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write `model` as a bundle; sets and returns `model.version` in exits.json.
    `weights_dtype` float16 or int8 stores the weights at 1/2 or 1/4 of the size
    (classifier/weight_storage.py); `load_bundle` always gives a float32 model."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.iterdir():
        if old.suffix.lower() in PICKLE_SUFFIXES:
            raise BundleError(f"{path}: holds pickle file {old.name}; refusing to write beside it")
    state = pack(model.state_dict(), weights_dtype)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:12]
    model.version = f"{name or model.config.model_type}-{digest}"
    model.config.save_pretrained(str(path))
    # A fast tokenizer is whole in tokenizer.json; vocab.json + merges.txt would repeat it (120 KB
    # of the default bundle's budget for git).
    legacy = None if not model.tokenizer.is_fast else False
    model.tokenizer.save_pretrained(str(path), legacy_format=legacy)
    (path / "exits.json").write_text(json.dumps(exits_document(model), indent=2))
    return path


def exits_document(model: EarlyExitModel) -> dict[str, Any]:
    pre = model.preprocessing
    return {
        "format": FORMAT,
        "version": model.version,
        "label_names": model.label_names,
        "exit_layers": model.exit_layers,
        "heads": {
            "ramp": "tanh-mlp",
            "gate": "tanh-mlp (predicts whether the final head is right)",
            "pre_pooling": model.pre_pooling,
            "ramp_pooling": model.ramp_pooling,
            # absent for a bundle without a raster exit (older bundles read the same)
            **({"raster": {"width": model.raster_exit.width}} if model.raster_exit else {}),
        },
        "temperatures": [float(t) for t in model.temperatures],
        "thresholds": [float(t) for t in model.thresholds],
        "policy": model.policy_spec,
        "preprocessing": {
            "max_text_len": pre.max_text_len,
            "image_size": pre.image_size,
            "image_mean": list(pre.image_mean),
            "image_std": list(pre.image_std),
        },
        "metadata": getattr(model, "metadata", {}),
        # absent for a bundle without an OCR-free exit (older bundles read the same)
        **({"ocr_free": model.ocr_free} if getattr(model, "ocr_free", None) else {}),
        # absent for a bundle built before the pressure policy existed
        **({"pressure": model.pressure} if getattr(model, "pressure", None) else {}),
    }


def read_exits(path: Path | str) -> dict[str, Any]:
    file = Path(path) / "exits.json"
    if not file.exists():
        raise BundleError(f"{path}: not a model bundle (no exits.json)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{file}: not valid JSON ({e.msg})") from None


def load_bundle(path: Path | str, device: str | torch.device = "cpu") -> EarlyExitModel:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such model folder")  # worded as doctriage.wiring's
    refuse_pickle(path)
    doc = read_exits(path)
    if doc.get("format") != FORMAT:
        raise BundleError(f"{path}: unsupported bundle format {doc.get('format')!r}")
    weights = path / "model.safetensors"
    if not weights.exists():
        raise BundleError(f"{path}: model.safetensors missing")
    config = LayoutLMv3Config.from_pretrained(str(path))
    pre = doc["preprocessing"]
    model = EarlyExitModel(
        config,
        doc["exit_layers"],
        doc["label_names"],
        load_tokenizer(path),
        Preprocessing(
            pre["max_text_len"],
            pre["image_size"],
            tuple(pre["image_mean"]),
            tuple(pre["image_std"]),
        ),
        pooling=Pooling(doc["heads"]["pre_pooling"], doc["heads"]["ramp_pooling"]),
        version=doc["version"],
        raster_width=int(doc["heads"].get("raster", {}).get("width", 0)),
    )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:  # damaged, or not safetensors at all
        raise BundleError(f"{weights}: not a readable safetensors file ({exc})") from None
    missing, unexpected = model.load_state_dict(unpack(state), strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{path}: weights do not match the config "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    model.temperatures.copy_(torch.tensor(doc["temperatures"], dtype=torch.float32))
    model.thresholds = [float(t) for t in doc["thresholds"]]
    model.policy_spec = doc["policy"]
    model.metadata = doc.get("metadata", {})
    model.ocr_free = doc.get("ocr_free")
    model.pressure = doc.get("pressure")
    return model.to(device).eval()


def from_checkpoint(
    path: Path | str,
    label_names: list[str],
    placement_layers: list[int],
    *,
    max_text_len: int | None = None,
    pooling: Pooling = DEFAULT_POOLING,
) -> EarlyExitModel:
    """A fresh early-exit model (new heads) on a LayoutLMv3 checkpoint directory's backbone."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise BundleError(f"{path}: not a checkpoint directory (no config.json)")
    refuse_pickle(path)
    if not any(path.glob("*.safetensors")):
        raise BundleError(f"{path}: no safetensors weights found")
    config = LayoutLMv3Config.from_pretrained(str(path))
    backbone = LayoutLMv3Model.from_pretrained(str(path), use_safetensors=True)
    # The patch position table is fixed to config.input_size (no interpolation in forward_image).
    mean, std, size = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), config.input_size
    processor = path / "preprocessor_config.json"
    if processor.exists():
        proc = json.loads(processor.read_text())
        mean = tuple(proc.get("image_mean", mean))
        std = tuple(proc.get("image_std", std))
    text_len = max_text_len or min(512, config.max_position_embeddings - 2)
    return EarlyExitModel(
        config,
        placement_layers,
        label_names,
        load_tokenizer(path),
        Preprocessing(text_len, size, mean, std),
        pooling=pooling,
        backbone=backbone,
    )
