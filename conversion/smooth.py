"""SmoothQuant-style smoothing of the FFN down-projections' inputs before int8 (Xiao et al., 2023).

The GELU outputs that feed each FFN down-projection have a few channels far larger than the rest (the
sentiment student's layer 0: max 28 against a median channel max of 1.8). Dynamic int8 quantizes that input
with one scale per token (conversion/token_quant.py), a row of every channel, so those channels set the step
for all the others. Dividing input channel j by s_j and multiplying the weight's column j by s_j leaves the
fp32 product unchanged and moves the outliers into the weights, which are quantized per output channel:

    s_j = max|x_j| ** alpha / max|w_j| ** (1 - alpha)     (max|x_j| measured on calibration texts)

The division becomes a Mul after the activation in the exported graph. BERT-like encoders only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from conversion.prune import encoder_layers


class ScaledActivation(nn.Module):
    """`activation(x) * scale`: the division by s, after the FFN's activation."""

    def __init__(self, activation: Callable[[torch.Tensor], torch.Tensor], scale: torch.Tensor) -> None:
        super().__init__()
        self.activation = activation
        self.scale: torch.Tensor
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x) * self.scale


@dataclass(frozen=True)
class LayerSmoothing:
    layer: int
    input_max: float  # the largest channel max of the down-projection's input, before
    input_median: float  # the median channel max, before
    scale_min: float
    scale_max: float

    def describe(self) -> str:
        return (
            f"layer {self.layer}: FFN input channel max {self.input_max:.2f} "
            f"(median {self.input_median:.2f}), s {self.scale_min:.2f}-{self.scale_max:.2f}"
        )


@torch.no_grad()
def ffn_input_maxima(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Per layer, the max |value| of each input channel of the FFN down-projection over `batches`."""
    layers = encoder_layers(model)
    maxima: list[torch.Tensor | None] = [None] * len(layers)

    def recorder(index: int) -> Callable[..., None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen = args[0].abs().amax(dim=tuple(range(args[0].ndim - 1)))
            previous = maxima[index]
            maxima[index] = seen if previous is None else torch.maximum(previous, seen)

        return record

    hooks = [layer.output.dense.register_forward_pre_hook(recorder(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if any(m is None for m in maxima):
        raise ValueError("no calibration batch reached the FFN layers")
    return [m for m in maxima if m is not None]


@torch.no_grad()
def smooth_ffn_inputs(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], alpha: float
) -> list[LayerSmoothing]:
    """Smooths every layer's FFN down-projection input in place (outputs unchanged in fp32)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], not {alpha}")
    report = []
    for index, (layer, input_max) in enumerate(
        zip(encoder_layers(model), ffn_input_maxima(model, batches), strict=True)
    ):
        dense: nn.Linear = layer.output.dense
        weight_max = dense.weight.abs().amax(dim=0).clamp(min=1e-5)  # per input channel: weight is [out, in]
        scale = input_max.clamp(min=1e-5) ** alpha / weight_max ** (1.0 - alpha)
        dense.weight.mul_(scale[None, :])
        intermediate = layer.intermediate
        intermediate.intermediate_act_fn = ScaledActivation(intermediate.intermediate_act_fn, 1.0 / scale)
        report.append(
            LayerSmoothing(
                index,
                float(input_max.max()),
                float(input_max.median()),
                float(scale.min()),
                float(scale.max()),
            )
        )
    return report
