"""Linear-chain scoring over tag emissions: the log-partition, Viterbi decoding and tag marginals, batched, with
transition scores that forbid invalid tag sequences (``TagScheme.allowed``).

Both decoders of the tagger use it (``tagger.decoder``):
- ``viterbi``: per-character softmax emissions (log-probabilities) and transitions that are 0 where allowed, a large
  negative number where not: the most probable *valid* sequence of independent per-character choices;
- ``crf``: the same with learned transition, start and end scores added (a CRF layer), trained by the
  sequence's negative log-likelihood.

Marginals (the probability of each tag at each character over all valid sequences) are the gradient of the
log-partition with respect to the emissions; an entity's score is the lowest marginal of its characters' tags,
the rule of the character CRF (``nerft.crf``). Partial gold (characters marked ``IGNORE``: a mention cut by a
training window) is handled exactly: the likelihood sums over every tag at those characters.
"""

from __future__ import annotations

import torch

from .positions import IGNORE
from .scheme import TagScheme

NEG = -1e4  # a forbidden transition: finite, so an all-forbidden row never makes NaN


def constraint_scores(scheme: TagScheme) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(transitions T x T, start T, end T): 0 where the scheme allows, ``NEG`` where it does not."""
    n = len(scheme)
    trans = torch.tensor([[0.0 if scheme.allowed(p, c) else NEG for c in range(n)] for p in range(n)])
    start = torch.tensor([0.0 if scheme.allowed_start(c) else NEG for c in range(n)])
    end = torch.tensor([0.0 if scheme.allowed_end(c) else NEG for c in range(n)])
    return trans, start, end


def log_partition(emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor,
                  end: torch.Tensor) -> torch.Tensor:
    """log Z per row: ``emissions`` B x C x T (fp32), ``mask`` B x C (each row a prefix of True, at least one)."""
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t, None], step, alpha)
    return torch.logsumexp(alpha + end, dim=-1)


def sequence_nll(emissions: torch.Tensor, mask: torch.Tensor, tags: torch.Tensor, trans: torch.Tensor,
                 start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of the gold ``tags`` (B x C; ``IGNORE`` at padding and unknown characters):
    log Z minus the log-partition of the lattice restricted to the gold tags where they are known."""
    known = (tags != IGNORE) & mask
    gold = torch.nn.functional.one_hot(tags.clamp(min=0), emissions.shape[-1]).bool()
    restricted = torch.where(known.unsqueeze(-1) & ~gold, torch.full_like(emissions, NEG), emissions)
    return (log_partition(emissions, mask, trans, start, end)
            - log_partition(restricted, mask, trans, start, end)).sum()


def marginals(emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor,
              end: torch.Tensor) -> torch.Tensor:
    """P(tag at character) over all valid sequences, B x C x T (the gradient of log Z)."""
    with torch.enable_grad():
        em = emissions.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_partition(em, mask, trans, start, end).sum(), em)
    return grad


def viterbi(emissions: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor, start: torch.Tensor,
            end: torch.Tensor) -> list[list[int]]:
    """The best tag sequence of each row (its length: the row's mask)."""
    score = start + emissions[:, 0]
    history = []
    for t in range(1, emissions.shape[1]):
        best, back = (score.unsqueeze(2) + trans).max(dim=1)
        history.append(back)
        score = torch.where(mask[:, t, None], best + emissions[:, t], score)
    last = (score + end).argmax(dim=-1).tolist()
    lengths = mask.sum(dim=1).tolist()
    back_steps = torch.stack(history).tolist() if history else []  # (C - 1) x B x T
    paths = []
    for row, (tag, n) in enumerate(zip(last, lengths, strict=True)):
        path = [tag]
        for t in range(n - 1, 0, -1):
            tag = back_steps[t - 1][row][tag]
            path.append(tag)
        paths.append(path[::-1])
    return paths
