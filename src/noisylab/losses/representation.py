"""Representation losses of Cheng et al., "Mitigating Memorization of Noisy Labels via
Regularization between Representations", ICLR 2023 (official code: UCSC-REAL/SelfSup_NoisyLabel,
``loss.py``), re-implemented from the formulas below.

The method trains ``alpha * base_loss(z, y) + InfoNCE(h(x'), h(x'')) + RKD(z, h(x))`` where ``z``
are the classifier logits and ``h`` the projection head of a (self-supervised) encoder.

NT-Xent / InfoNCE (SimCLR; ``Info_NCE`` in ``loss.py``), for two views ``z1, z2`` of B examples::

    o       = [normalize(z1); normalize(z2)]                  [2B, D], rows of unit length
    s[i, j] = <o_i, o_j> / tau
    pos(i)  = i + B  (i < B),   i - B  (i >= B)               the other view of the same example
    loss    = mean_i  -log( exp(s[i, pos(i)]) / sum_{j != i} exp(s[i, j]) )

RKD distance (``RkdDistance``), student ``s = softmax(z)``, teacher ``t``::

    Dt[i, j] = max(||t_i - t_j||^2, 1e-12),  Dt[i, i] = 0,  Dt <- Dt / mean(Dt[Dt > 0])   (SQUARED)
    Ds[i, j] = sqrt(max(||s_i - s_j||^2, 1e-12)),  Ds[i, i] = 0,  Ds <- Ds / mean(Ds[Ds > 0])
    loss     = mean_{i, j} huber(Ds[i, j] - Dt[i, j]),    huber(x) = x^2 / 2 if |x| < 1 else |x| - 1/2

RKD angle (``RKdAngle``), on the RAW student logits and the teacher::

    e_ij      = (v_i - v_j) / max(||v_i - v_j||, 1e-12)        (0 when v_i == v_j)
    A[i,j,k]  = <e_ij, e_ik>                                    (cosine of the angle at vertex i)
    loss      = mean_{i, j, k} huber(A_s[i,j,k] - A_t[i,j,k])

In the official code the teacher is NOT detached (the RKD term also trains the projection head);
``variant="park"`` gives the form of Park et al., "Relational Knowledge Distillation", CVPR 2019,
with a detached teacher (and plain, non-squared teacher distances).
"""
from __future__ import annotations


import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .classification import upcast

EPS = 1e-12
RKD_VARIANTS = ("official", "park")


class NTXentLoss(nn.Module):
    """NT-Xent (normalised temperature-scaled cross-entropy) of SimCLR, Chen et al., ICML 2020.

    This is exactly the official ``Info_NCE`` of ``loss.py`` (SelfSup_NoisyLabel), the InfoNCE
    term of the ICLR 2023 method; :data:`InfoNCELoss` is an alias of this class.

    Args:
        tau: temperature, > 0 (the paper and its SimCLR pre-training use 0.5).
        gather_distributed: under an initialised ``torch.distributed`` group with world size
            W > 1, contrast the local anchors against the projections of all ranks.

    Call ``loss = crit(z1 [B, D], z2 [B, D])`` with the (un-normalised) projections of two views
    of the same B examples; row ``i`` of ``z1`` and of ``z2`` form the positive pair, every other
    row of either view is a negative. Returns the mean over the 2B anchors (a scalar).

    Distributed: ``z1`` and ``z2`` of every rank are gathered with a gradient-preserving
    all-gather (its backward sums the gradients of every rank's loss into the owner of each
    row, as ``torch.distributed.nn.functional.all_gather``); each rank's loss is the mean over its own 2B
    anchors against all 2WB candidates. The mean of the W local losses is the single-process loss
    on the concatenated batch of W*B, and DDP's gradient averaging then gives exactly its
    gradient. Every rank must pass the same B (and D); otherwise every rank raises ValueError.
    For B = 1 on a single process each anchor has only its positive as candidate: loss 0.
    """

    def __init__(self, tau: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"NT-Xent tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.gather_distributed = bool(gather_distributed)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError("NT-Xent needs two [B, D] views of equal shape, "
                             f"got {tuple(z1.shape)} and {tuple(z2.shape)}")
        b = z1.shape[0]
        u1 = F.normalize(upcast(z1), dim=1)
        u2 = F.normalize(upcast(z2), dim=1)
        anchors = torch.cat([u1, u2])  # [2B, D]: local rows, view 1 then view 2

        world, rank = 1, 0
        if self.gather_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world, rank = dist.get_world_size(), dist.get_rank()
            _check_same_shape(u1)
            all1 = _all_gather_with_grad(u1)  # [W*B, D], rank-major
            all2 = _all_gather_with_grad(u2)
            candidates = torch.cat([all1, all2])  # [2WB, D]
        else:
            candidates = anchors

        n = world * b  # examples in the (global) batch
        local = torch.arange(b, device=z1.device) + rank * b  # global example ids of the local rows
        self_col = torch.cat([local, local + n])  # where each anchor sits among the candidates
        pos_col = torch.cat([local + n, local])  # ... and where its other view sits

        sim = anchors @ candidates.T / self.tau  # [2B, 2WB]
        rows = torch.arange(2 * b, device=z1.device)
        sim = sim.index_put((rows, self_col), torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device))
        return F.cross_entropy(sim, pos_col)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, gather_distributed={self.gather_distributed}"


InfoNCELoss = NTXentLoss
"""Alias: the InfoNCE term of Cheng et al. (official ``Info_NCE``) is SimCLR's NT-Xent."""


def _check_same_shape(x: torch.Tensor) -> None:
    """Collective: every rank learns every rank's ``x.shape`` and all raise if they differ."""
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    found = [tuple(int(v) for v in s.tolist()) for s in shapes]
    if len(set(found)) != 1:
        raise ValueError(f"NT-Xent under torch.distributed needs the same [B, D] on every rank, got {found}")


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward hands each rank the sum, over all ranks, of the gradients
    of its own rows (an ``all_reduce`` of the whole gradient, then the rank's slice).

    ``torch.distributed.nn.functional.all_gather`` computes the same, but its gloo backward (an
    all-to-all) aborted about one 2-process CPU run in ten here, and it is deprecated in torch 2.14.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # [B, D] -> [W*B, D], rank-major
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` of every rank -> ``[W*B, D]`` (rank-major), gradients flowing back to each rank."""
    return _GatherWithGrad.apply(x)


def pairwise_distances(x: torch.Tensor, squared: bool) -> torch.Tensor:
    """``[B, D] -> [B, B]`` Euclidean distances between rows, as the official ``pdist``.

    The squared distance ``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` (Gram form: O(B^2) memory) is
    clamped at 1e-12, then square-rooted unless ``squared``; the diagonal is set to exactly 0
    (no gradient flows through it). Off-diagonal entries are therefore always > 0.
    """
    sq_norm = (x * x).sum(dim=1)
    d2 = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * (x @ x.T)).clamp(min=EPS)
    d = d2 if squared else d2.sqrt()
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d.masked_fill(eye, 0.0)


def _check_variant(variant: str) -> str:
    if variant not in RKD_VARIANTS:
        raise ValueError(f"RKD variant must be one of {RKD_VARIANTS}, got {variant!r}")
    return variant


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, name: str) -> None:
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"{name} needs student [B, C] and teacher [B, D] with the same B, "
                         f"got {tuple(student.shape)} and {tuple(teacher.shape)}")


class RKDDistanceLoss(nn.Module):
    """Distance-wise relational distillation between the classifier and a representation.

    Args:
        variant: ``"official"`` (``RkdDistance`` of SelfSup_NoisyLabel ``loss.py``): teacher
            distances SQUARED, teacher not detached, so the gradient also reaches the teacher;
            ``"park"`` (Park et al., CVPR 2019): teacher distances plain Euclidean and the
            teacher detached.

    Call ``loss = crit(student_logits [B, C], teacher [B, D])`` -> scalar. The student is always
    turned into probabilities ``softmax(student_logits, dim=1)`` with plain Euclidean distances;
    each distance matrix is divided by the mean of its off-diagonal (= positive) entries and the
    loss is the Huber (smooth-L1, beta 1) difference averaged over all B*B entries (diagonal
    included, where both are 0). B = 1 has no pair: the loss is ``0 * (student.sum() +
    teacher.sum())``, a zero that still carries a grad_fn (the official code returns NaN there).
    """

    def __init__(self, variant: str = "official") -> None:
        super().__init__()
        self.variant = _check_variant(variant)

    def forward(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        _check_pair(student_logits, teacher, "RKDDistanceLoss")
        student_logits, teacher = upcast(student_logits), upcast(teacher)
        if self.variant == "park":
            teacher = teacher.detach()
        if student_logits.shape[0] < 2:
            return 0.0 * (student_logits.sum() + teacher.sum())
        dt = pairwise_distances(teacher, squared=self.variant == "official")
        dt = dt / dt[dt > 0].mean()
        ds = pairwise_distances(F.softmax(student_logits, dim=1), squared=False)
        ds = ds / ds[ds > 0].mean()
        return F.smooth_l1_loss(ds, dt, reduction="mean", beta=1.0)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


def angle_tensor(v: torch.Tensor) -> torch.Tensor:
    """``[B, D] -> [B, B, B]``: ``A[i, j, k] = <e_ij, e_ik>``, ``e_ij = normalize(v_i - v_j)``.

    The vertex is the FIRST index. The official code builds ``v[None] - v[:, None]`` (i.e.
    ``v_j - v_i``) and a batched product over the first index; both difference vectors flip
    sign there, so its tensor is entry for entry this one. A zero difference (``j == i`` or
    duplicate rows) gives ``e_ij = 0`` as ``F.normalize`` does, so those angles are 0.
    """
    e = F.normalize(v[:, None, :] - v[None, :, :], p=2, dim=2, eps=EPS)  # e[i, j] = unit(v_i - v_j)
    return torch.einsum("ijd,ikd->ijk", e, e)


class RKDAngleLoss(nn.Module):
    """Angle-wise relational distillation between the classifier and a representation.

    Args:
        variant: ``"official"`` (``RKdAngle`` of SelfSup_NoisyLabel ``loss.py``): teacher not
            detached; ``"park"`` (Park et al., CVPR 2019): teacher detached.

    Call ``loss = crit(student_logits [B, C], teacher [B, D])`` -> scalar: the Huber (smooth-L1,
    beta 1) difference between the angle tensors (:func:`angle_tensor`) of the RAW logits (no
    softmax, unlike the distance loss) and of the teacher, averaged over all B^3 triples. Memory
    is O(B^2 (C + D) + B^3). For B = 1 every angle is 0 and so is the loss (returned as
    ``0 * (student.sum() + teacher.sum())``, with a grad_fn).
    """

    def __init__(self, variant: str = "official") -> None:
        super().__init__()
        self.variant = _check_variant(variant)

    def forward(self, student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        _check_pair(student_logits, teacher, "RKDAngleLoss")
        student_logits, teacher = upcast(student_logits), upcast(teacher)
        if self.variant == "park":
            teacher = teacher.detach()
        if student_logits.shape[0] < 2:
            return 0.0 * (student_logits.sum() + teacher.sum())
        return F.smooth_l1_loss(angle_tensor(student_logits).reshape(-1), angle_tensor(teacher).reshape(-1),
                                reduction="mean", beta=1.0)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"
