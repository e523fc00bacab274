"""Auxiliary-loss-free MoE load balancing (DeepSeek-V3 style) through `e_score_correction_bias`.

The router picks experts by `sigmoid(logits) + e_score_correction_bias` but weighs them by the sigmoid
alone, so nudging the bias of overloaded experts down and underloaded ones up evens the load without
touching the loss. The trained biases ship in the checkpoint, so consumers must apply them.
"""

import torch
from torch import nn
from transformers.models.mimo_v2_flash.modeling_mimo_v2_flash import MiMoV2FlashTopkRouter


class ExpertLoadBalancer:
    """Counts expert picks of every router during forward passes and updates the routers' biases.

    Call `update()` once after each optimizer step; it consumes the counts gathered since the last call.
    """

    def __init__(self, model: nn.Module, update_rate: float) -> None:
        self.update_rate = update_rate
        self._routers = [m for m in model.modules() if isinstance(m, MiMoV2FlashTopkRouter)]
        self._counts = [torch.zeros(r.num_experts, dtype=torch.float64) for r in self._routers]
        for index, router in enumerate(self._routers):
            router.register_forward_hook(self._count_hook(index))

    def _count_hook(self, index: int):
        def hook(router: MiMoV2FlashTopkRouter, _inputs, outputs) -> None:
            _, _, topk_indices = outputs  # topk_indices: [num_tokens, num_experts_per_tok]
            picks = torch.bincount(topk_indices.detach().flatten(), minlength=router.num_experts)
            self._counts[index] += picks.to(torch.float64)

        return hook

    @torch.no_grad()
    def update(self) -> float:
        """Move each bias by `update_rate` toward even load; return the worst max/mean load ratio seen."""
        worst_ratio = 1.0
        for router, counts in zip(self._routers, self._counts, strict=True):
            mean_load = counts.mean()
            if mean_load == 0:
                continue
            router.e_score_correction_bias += self.update_rate * torch.sign(mean_load - counts).float()
            worst_ratio = max(worst_ratio, float(counts.max() / mean_load))
            counts.zero_()
        return worst_ratio
