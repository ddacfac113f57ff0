"""The early-exit LayoutLMv3: a transformers LayoutLMv3Model backbone with exit heads after chosen
encoder layers, and a staged forward that really stops.

Staged API (what the stage batcher builds on):
    inputs = model.encode(pages)           # deterministic tokenisation + pixels
    state = model.embed(inputs)            # stage 0: embeddings, where the pre-encoder exit sits
    logits = model.exit_logits(state)      # logits of the exit at state.stage (stage 0 here)
    logits, state = model.advance(state)   # runs only the layers up to the next exit
A page that exits is dropped with `state.select(...)` and never computed further.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LayoutLMv3Config, LayoutLMv3Model, PreTrainedTokenizerBase

from classifier.fused_attention import attention_bias, fused_layer
from classifier.heads import GateHead, RampHead
from classifier.inputs import PageLike, clamp_box, image_to_array, pixels_from_arrays
from classifier.position_bias import position_bias
from classifier.raster_exit import RasterExit
from classifier.state import StageState


@dataclass
class Preprocessing:
    max_text_len: int
    image_size: int
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Pooling:
    """How the exit heads pool the tokens: the pre-encoder exit's, and every later exit's
    (exits.json keeps them under "heads")."""

    pre: str = "concat"
    ramp: str = "concat"


DEFAULT_POOLING = Pooling()


class EarlyExitModel(nn.Module):
    def __init__(
        self,
        config: LayoutLMv3Config,
        exit_layers: Sequence[int],
        label_names: Sequence[str],
        tokenizer: PreTrainedTokenizerBase,
        preprocessing: Preprocessing,
        *,
        pooling: Pooling = DEFAULT_POOLING,
        backbone: LayoutLMv3Model | None = None,
        version: str = "unversioned",
        raster_width: int = 0,
    ):
        super().__init__()
        if not (config.text_embed and config.visual_embed):
            raise ValueError(
                "the early-exit model needs a LayoutLMv3 with text and visual embeddings"
            )
        layers = list(exit_layers)
        if (
            layers[0] != 0
            or layers[-1] != config.num_hidden_layers
            or layers != sorted(set(layers))
        ):
            raise ValueError(
                f"exit layers must rise from 0 to {config.num_hidden_layers}: {layers}"
            )
        if preprocessing.image_size % config.patch_size:
            raise ValueError("image size must be a multiple of the patch size")
        self.config = config
        self.backbone = backbone if backbone is not None else LayoutLMv3Model(config)
        self.exit_layers = layers
        self.label_names = list(label_names)
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.pre_pooling = pooling.pre
        self.ramp_pooling = pooling.ramp
        self.version = version
        n = len(self.label_names)
        poolings = [pooling.pre] + [pooling.ramp] * (len(layers) - 1)
        self.ramps = nn.ModuleList(RampHead(config.hidden_size, n, p) for p in poolings)
        self.gates = nn.ModuleList(GateHead(config.hidden_size, p) for p in poolings)
        # Calibration and exit decisions live with the weights (saved in exits.json).
        self.register_buffer("temperatures", torch.ones(len(layers)), persistent=False)
        self.thresholds: list[float] = [1.0] * (len(layers) - 1) + [0.0]
        self.policy_spec: dict = {"name": "max_softmax", "thresholds": list(self.thresholds)}
        # The cheaper policy used under backlog pressure, fitted at a looser budget on the same
        # validation pages (classifier/calibrate.py): {"policy", "budget", "selection"}; None in
        # bundles built before it existed (doctriage/pressure_policy.py derives one then).
        self.pressure: dict | None = None
        # The raster exit (classifier/raster_exit.py): what the OCR-free exit asks; None without.
        self.raster_exit = RasterExit(n, raster_width) if raster_width > 0 else None
        # The OCR-free exit's temperature and threshold (classifier/textless.py); None: none.
        self.ocr_free: dict | None = None
        # "eager": transformers' own layers (the bit-exact reference, the default);
        # "fused": one scaled_dot_product_attention kernel per layer (classifier/fused_attention).
        self.attention_impl = "eager"

    # ---- facts -----------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.exit_layers)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def seq_len(self) -> int:
        patches = (self.preprocessing.image_size // self.config.patch_size) ** 2
        return self.preprocessing.max_text_len + patches + 1

    # ---- inputs ----------------------------------------------------------------------------
    def encode(self, pages: Sequence[PageLike]) -> dict[str, torch.Tensor]:
        """Tokenise words with boxes (truncated/padded to max_text_len) and make pixel values."""
        pre = self.preprocessing
        words = [list(p.words) or [""] for p in pages]
        boxes = [[clamp_box(b) for b in p.boxes] or [(0, 0, 0, 0)] for p in pages]
        enc = self.tokenizer(
            text=words,
            boxes=boxes,
            truncation=True,
            padding="max_length",
            max_length=pre.max_text_len,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        arrays = [image_to_array(p.image, pre.image_size) for p in pages]
        return {
            "input_ids": enc["input_ids"],
            "bbox": enc["bbox"],
            "attention_mask": enc["attention_mask"],
            "pixel_values": pixels_from_arrays(arrays, pre.image_mean, pre.image_std),
        }

    # ---- staged forward --------------------------------------------------------------------
    def embed(self, inputs: dict[str, torch.Tensor]) -> StageState:
        """Embeddings for text + image and the attention biases every layer reuses (stage 0).

        Mirrors LayoutLMv3Model.forward up to the encoder loop, so the staged path gives the
        same numbers as an ordinary forward."""
        bb = self.backbone
        dev = self.device
        input_ids = inputs["input_ids"].to(dev)
        bbox = inputs["bbox"].to(dev)
        text_mask = inputs["attention_mask"].to(dev)
        # encode() makes float32 pixels; a bf16/fp16 model (GPU serving) needs them in its dtype.
        pixel_values = inputs["pixel_values"].to(dev, dtype=bb.patch_embed.proj.weight.dtype)
        batch = input_ids.shape[0]
        text = bb.embeddings(
            input_ids=input_ids, bbox=bbox, token_type_ids=torch.zeros_like(input_ids)
        )
        visual = bb.forward_image(pixel_values)
        mask = torch.cat(
            [text_mask, torch.ones(visual.shape[:2], dtype=text_mask.dtype, device=dev)], dim=1
        )
        visual_bbox = bb.calculate_visual_bbox(dev, dtype=torch.long, batch_size=batch)
        hidden = bb.dropout(bb.LayerNorm(torch.cat([text, visual], dim=1)))
        ext = bb.get_extended_attention_mask(mask, mask.shape, dtype=hidden.dtype)
        # The attention bias waits for the first advance (see StageState.layout).
        layout = torch.cat([bbox, visual_bbox], dim=1)
        return StageState(hidden, ext, text_mask, None, stage=0, layout=layout)

    def position_bias(self, state: StageState) -> torch.Tensor | None:
        """The state's summed attention bias (B, heads, L, L), built from its boxes if the state
        does not carry it yet; None when the model uses no relative-position bias."""
        if state.layout is None:
            return state.position_bias
        t = state.text_len
        return position_bias(
            self.backbone.encoder, self.config, state.layout, t, state.layout.shape[1] - t
        )

    def exit_logits(self, state: StageState) -> torch.Tensor:
        """Logits (B, num_labels) of the exit at `state.stage`."""
        return self.ramps[state.stage](state.hidden, state.text_mask)

    def gate_logits(self, state: StageState) -> torch.Tensor:
        """Gate logit (B,) at `state.stage`: >0 means "the final head will be right"."""
        return self.gates[state.stage](state.hidden, state.text_mask)

    def advance(self, state: StageState, stages: int = 1) -> tuple[torch.Tensor, StageState]:
        """Run the encoder layers from the current exit to `stages` exits further on (clipped at
        the final one); returns the logits of the exit reached and the new state."""
        if state.stage >= self.num_stages - 1:
            raise ValueError("state is already at the final exit")
        target = min(self.num_stages - 1, state.stage + stages)
        hidden = state.hidden
        bias = self.position_bias(state)
        layers = self.backbone.encoder.layer
        span = range(self.exit_layers[state.stage], self.exit_layers[target])
        if self.attention_impl == "fused":
            head_size = self.config.hidden_size // self.config.num_attention_heads
            fused_bias = attention_bias(bias, state.attention_mask, head_size, hidden.dtype)
            for i in span:
                hidden = fused_layer(layers[i], hidden, fused_bias)
            new = StageState(hidden, state.attention_mask, state.text_mask, bias, target)
            return self.exit_logits(new), new
        # The layers add (rel_pos + rel_2d_pos): the summed bias goes in as rel_pos, plus 0.
        rel_2d = 0 if self.config.has_spatial_attention_bias else None
        for i in span:
            hidden = layers[i](
                hidden,
                state.attention_mask,
                None,
                False,
                rel_pos=bias,
                rel_2d_pos=rel_2d,
            )[0]
        new = StageState(hidden, state.attention_mask, state.text_mask, bias, target)
        return self.exit_logits(new), new

    def all_exit_logits(
        self, inputs: dict[str, torch.Tensor], with_gates: bool = False
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits at every exit (and gate logits if asked), for training and evaluation."""
        state = self.embed(inputs)
        logits = [self.exit_logits(state)]
        gates = [self.gate_logits(state)] if with_gates else []
        while state.stage < self.num_stages - 1:
            out, state = self.advance(state)
            logits.append(out)
            if with_gates:
                gates.append(self.gate_logits(state))
        return logits, gates

    def full_forward_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final-exit logits through an ordinary LayoutLMv3Model forward (the reference)."""
        dev = self.device
        out = self.backbone(
            input_ids=inputs["input_ids"].to(dev),
            bbox=inputs["bbox"].to(dev),
            attention_mask=inputs["attention_mask"].to(dev),
            pixel_values=inputs["pixel_values"].to(dev),
        ).last_hidden_state
        return self.ramps[-1](out, inputs["attention_mask"].to(dev))

    # ---- calibration -----------------------------------------------------------------------
    def calibrated_probs(self, stage: int, logits: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled softmax with the exit's fitted temperature."""
        return torch.softmax(logits.float() / self.temperatures[stage].to(logits.device), dim=-1)

    # ---- cost model ------------------------------------------------------------------------
    def stage_flops(self) -> list[float]:
        """Multiply-add FLOPs per page to reach and decide at each stage (cumulative)."""
        cfg, pre = self.config, self.preprocessing
        h, i, ll = cfg.hidden_size, cfg.intermediate_size, self.seq_len
        patches = (pre.image_size // cfg.patch_size) ** 2
        embed = 2 * patches * (3 * cfg.patch_size**2) * h
        layer = 2 * ll * (4 * h * h + 2 * h * i) + 4 * ll * ll * h
        head = 2 * (2 * h * h + h * self.num_labels)
        return [embed + layer * n + head * (k + 1) for k, n in enumerate(self.exit_layers)]

    def full_flops(self) -> float:
        """FLOPs per page of a full-depth pass (no intermediate heads evaluated)."""
        per_stage = self.stage_flops()
        head = 2 * (2 * self.config.hidden_size**2 + self.config.hidden_size * self.num_labels)
        return per_stage[-1] - head * (self.num_stages - 1)
