r"""The Channel-wise Activation Suppressing (CAS) module and its loss (Bai et al., ICLR 2021).

Given a feature map :math:`f \in \mathbb{R}^{N\times C\times H\times W}` taken after a ReLU,
CAS pools it to :math:`\bar f \in \mathbb{R}^{N\times C}`, classifies it with an auxiliary
linear head :math:`p = W\bar f + b` and multiplies every channel of :math:`f` by the weight row
:math:`W_k` of one class :math:`k`: the true label during training, the auxiliary head's
prediction at evaluation. The weights are raw and signed, the bias never enters the mask,
exactly as in the official code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CAS_BETA = 2.0


class CASModule(nn.Module):
    """Auxiliary classifier on pooled channels plus the class-weight channel mask it induces."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if channels < 1 or num_classes < 2:
            raise ValueError(f"CASModule needs channels >= 1 and num_classes >= 2, got {channels}, {num_classes}.")
        self.classifier = nn.Linear(channels, num_classes)

    def auxiliary_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Auxiliary logits from the globally average-pooled, unmasked features."""
        return self.classifier(features.mean(dim=(2, 3)))

    def mask_for(self, classes: torch.Tensor) -> torch.Tensor:
        """Channel masks (N×C): the auxiliary classifier's weight row of each class."""
        return self.classifier.weight[classes]

    def forward(self, features: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(masked features, auxiliary logits)``.

        In training mode the mask uses the true labels ``y`` (required); in evaluation mode
        ``y`` is ignored and the mask uses the auxiliary head's own prediction.
        """
        if features.dim() != 4 or features.shape[1] != self.classifier.in_features:
            raise ValueError(
                f"CASModule expects features of shape N×{self.classifier.in_features}×H×W, got {tuple(features.shape)}."
            )
        aux_logits = self.auxiliary_logits(features)
        if self.training:
            if y is None:
                raise ValueError("CASModule in training mode needs the true labels y to pick the mask.")
            classes = y
        else:
            classes = aux_logits.argmax(dim=1)
        mask = self.mask_for(classes)
        return features * mask[:, :, None, None], aux_logits


def cas_loss(
    logits: torch.Tensor,
    aux_logits: list[torch.Tensor],
    y: torch.Tensor,
    beta: float = DEFAULT_CAS_BETA,
) -> torch.Tensor:
    r"""The CAS training loss :math:`CE(main) + \beta/S \sum_s CE(aux_s, y)`."""
    return F.cross_entropy(logits, y) + auxiliary_loss(aux_logits, y, beta)


def auxiliary_loss(aux_logits: list[torch.Tensor], y: torch.Tensor, beta: float = DEFAULT_CAS_BETA) -> torch.Tensor | float:
    r""":math:`\beta/S \sum_s CE(aux_s, y)`; zero when the model has no CAS modules."""
    if not aux_logits:
        return 0.0
    return beta * torch.stack([F.cross_entropy(a, y) for a in aux_logits]).mean()
