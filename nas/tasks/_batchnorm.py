"""Re-estimating BatchNorm statistics after compression, from any stream of input batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def reestimate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them from ``inputs``.

    Batches are forwarded in train mode with ``momentum=None`` (an exact cumulative
    average); weights are not touched. Returns the model in eval mode, each BN's momentum
    restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        for batch in inputs:
            model(batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
    return model
