"""The loss of a Hugging Face causal LM without its (batch, seq, vocab) logits.

transformers computes `logits = lm_head(hidden)` for every position and then the cross-entropy:
at Llama 3's 128k vocabulary and seq 2048 those logits (and their fp32 upcast, log-softmax and
gradient) are the largest buffers of a training step. `CausalLMLoss` runs the model's backbone
(`model.base_model`: LlamaModel, GPT2Model, ...) to the final hidden states and hands them with
the head's weight to brlm's chunked `linear_cross_entropy` (brlm/models/loss.py), which never
holds more than one chunk of logits.

    loss_fn = CausalLMLoss(peft_model)             # an nn.Module, so DDP sees one forward
    total, n = loss_fn(batch.input_ids, batch.targets, batch.position_ids)   # summed nats, targets
    logps = loss_fn.sequence_logps(ids, targets, pos)                          # DPO: (B,) sums

`targets` are already shifted (brlm.posttrain.data). Heads the fused path cannot reproduce exactly
(final logit soft-capping, a logit scale, a LoRA-wrapped head) fall back to the model's own
logits; `fused` and `reason` say which path runs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from brlm.models.loss import IGNORE_INDEX, linear_cross_entropy
from brlm.posttrain.model import hf_model


def fused_unsupported(model: nn.Module) -> str | None:
    """Why the fused loss cannot stand in for this model's head (None: it can)."""
    hf = hf_model(model)
    cfg = hf.config
    head = hf.get_output_embeddings()
    if getattr(cfg, "final_logit_softcapping", None):
        return "final_logit_softcapping"
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return "logit_scale"
    if type(head) is not nn.Linear:
        return f"output head is {type(head).__name__}, not a plain Linear (e.g. LoRA on lm_head)"
    if getattr(hf, "base_model", None) is None or hf.base_model is hf:
        return "no backbone (model.base_model) to take hidden states from"
    return None


class CausalLMLoss(nn.Module):
    def __init__(self, model: nn.Module, fused: bool = True):
        super().__init__()
        self.model = model
        self.reason = fused_unsupported(model) if fused else "finetune.fused_loss=false"
        self.fused = self.reason is None
        hf = hf_model(model)
        # Kept out of the module tree (a tuple): they are already parameters of self.model.
        self._parts = (hf.base_model, hf.get_output_embeddings())

    def hidden(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        backbone, _ = self._parts
        return backbone(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state  # (B, T, C)

    def logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits  # (B, T, V)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, position_ids: torch.Tensor,
                mode: str = "sum") -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """(summed cross-entropy over the targets, number of targets); mode='logps': sequence_logps."""
        if mode == "logps":
            return self.sequence_logps(input_ids, targets, position_ids)
        n = (targets != IGNORE_INDEX).sum()
        if self.fused:
            _, head = self._parts
            mean = linear_cross_entropy(self.hidden(input_ids, position_ids), head.weight, targets, bias=head.bias)
        else:
            logits = self.logits(input_ids, position_ids)
            mean = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return mean * n, n

    def sequence_logps(self, input_ids: torch.Tensor, targets: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """log p(targets) summed per row: (B,). One row at a time through the chunked loss."""
        counts = (targets != IGNORE_INDEX).sum(dim=1)
        if self.fused:
            _, head = self._parts
            h = self.hidden(input_ids, position_ids)
            rows = [-linear_cross_entropy(h[b], head.weight, targets[b], bias=head.bias) * counts[b] for b in range(h.size(0))]
            return torch.stack(rows)
        logits = self.logits(input_ids, position_ids).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * (targets != IGNORE_INDEX)).sum(dim=1)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO loss -log σ(β((π_c - ref_c) - (π_r - ref_r))) (Rafailov et al. 2023, eq. 7) and the
    implicit rewards β(π - ref) of each side."""
    chosen_reward = beta * (pi_chosen - ref_chosen)
    rejected_reward = beta * (pi_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_reward - rejected_reward)
    return losses, {"chosen_reward": chosen_reward.detach(), "rejected_reward": rejected_reward.detach()}
