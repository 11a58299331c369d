"""Subjets of large-R jets as ATLAS reconstructs them: variable-radius track jets.

A large-R jet's subjets are anti-kt jets of its tracks with a radius that shrinks with their
momentum, R = 30 GeV / pT clipped to [0.02, 0.4]. A track's ``subjetIndex`` is the subjet it
was clustered into, leading (highest pT) subjet 0, -1 for none. The clustering sees measured
track directions only, never which decay a track came from: a prong's wide fragmentation falls
outside its shrinking cone at high pT, a track from one prong can land in the cone of a harder
neighbour, two prongs closer than the harder one's radius merge into one subjet, and a hard
cluster of radiation can make a subjet of its own.

For hard cores anti-kt reduces to cones: a softer object joins the harder core k within R_k
that minimises Delta R / pT_k, and two cores merge when they are closer than the harder one's
radius. The prong directions seed the cores (where a calorimeter-level axis would), the hardest
track left over seeds one more, and the cores' momenta and axes are then re-measured from
their tracks.
"""

from __future__ import annotations

import numpy as np

VR_RHO = 30e3  # MeV
VR_MIN, VR_MAX = 0.02, 0.4
MIN_PT = 7e3  # MeV: track jets softer than this are not kept
MIN_TRACKS = 2
MAX_SUBJETS = 3  # subjets that get an index; tracks of softer ones get -1
CHARGED_FRACTION = 0.6  # a prong's momentum carried by its tracks, to seed the radius


def vr_radius(pt: np.ndarray) -> np.ndarray:
    """Radius of a variable-radius track jet of transverse momentum ``pt`` (MeV)."""
    return np.clip(VR_RHO / np.maximum(pt, 1.0), VR_MIN, VR_MAX)


def _delta_r(eta_a, phi_a, eta_b, phi_b) -> np.ndarray:
    return np.sqrt((eta_a - eta_b) ** 2 + (phi_a - phi_b) ** 2)


def merge_cores(
    eta: np.ndarray, phi: np.ndarray, pt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cores ``(n, K)`` (pt 0: none) after merging those closer than the harder one's radius.

    The closest pair (relative to that radius) merges first into the pt-weighted axis, as
    anti-kt's sequence would; a merged core keeps the slot of the harder one.
    """
    eta, phi, pt = eta.copy(), phi.copy(), pt.copy()
    n, K = pt.shape
    rows = np.arange(n)
    i_idx, j_idx = np.triu_indices(K, 1)
    for _ in range(K - 1):
        dr = _delta_r(eta[:, i_idx], phi[:, i_idx], eta[:, j_idx], phi[:, j_idx])
        radius = vr_radius(np.maximum(pt[:, i_idx], pt[:, j_idx]))
        ratio = np.where((pt[:, i_idx] > 0) & (pt[:, j_idx] > 0), dr / radius, np.inf)
        best = np.argmin(ratio, axis=1)
        merge = ratio[rows, best] < 1.0
        if not merge.any():
            break
        a, b = i_idx[best], j_idx[best]
        hard = np.where(pt[rows, a] >= pt[rows, b], a, b)
        soft = np.where(hard == a, b, a)
        r = rows[merge]
        hard, soft = hard[merge], soft[merge]
        total = pt[r, hard] + pt[r, soft]
        for x in (eta, phi):
            x[r, hard] = (pt[r, hard] * x[r, hard] + pt[r, soft] * x[r, soft]) / total
        pt[r, hard] = total
        pt[r, soft] = 0.0
    return eta, phi, pt


def _assign(deta, dphi, jet, eta, phi, pt) -> np.ndarray:
    """Core index ``(M,)`` of each track (-1: outside every core's radius)."""
    # squared distances in float32 (the tracks' precision), one core at a time: the same choice
    # at half the time of (track, core) arrays, whose memory traffic limits the speed here
    f32 = np.float32
    reach = np.where(pt > 0, vr_radius(pt) ** 2, -1.0).astype(f32)
    inv_pt2 = (1.0 / np.maximum(pt, 1.0) ** 2).astype(f32)
    eta, phi = eta.astype(f32), phi.astype(f32)
    best_score = np.full(len(jet), np.inf, dtype=f32)
    best = np.full(len(jet), -1)
    for k in range(pt.shape[1]):
        d_eta, d_phi = deta - eta[jet, k], dphi - phi[jet, k]
        dr2 = d_eta * d_eta + d_phi * d_phi
        score = np.where(dr2 < reach[jet, k], dr2 * inv_pt2[jet, k], np.inf)
        better = score < best_score
        best_score = np.where(better, score, best_score)
        best = np.where(better, k, best)
    return best


def _remeasure(deta, dphi, pt, jet, core, n, K):
    """Cores' pt and pt-weighted axes ``(n, K)`` from their tracks, and their track counts."""
    ok = core >= 0
    key = jet[ok] * K + core[ok]
    w = pt[ok].astype(np.float64)
    total = np.bincount(key, weights=w, minlength=n * K)
    count = np.bincount(key, minlength=n * K).reshape(n, K)
    safe = np.maximum(total, 1e-9)
    eta = (np.bincount(key, weights=w * deta[ok], minlength=n * K) / safe).reshape(n, K)
    phi = (np.bincount(key, weights=w * dphi[ok], minlength=n * K) / safe).reshape(n, K)
    return eta, phi, total.reshape(n, K), count


def subjet_index(
    deta: np.ndarray,
    dphi: np.ndarray,
    pt: np.ndarray,
    jet: np.ndarray,
    seed_eta: np.ndarray,
    seed_phi: np.ndarray,
    seed_pt: np.ndarray,
) -> np.ndarray:
    """``subjetIndex`` ``(M,)`` of packed tracks (directions relative to their jet's axis).

    ``jet`` ``(M,)`` is each track's jet; the seeds ``(n, S)`` are the prong directions
    (relative to the jet axis) and momenta, pt 0 where a jet has fewer prongs.
    """
    n = len(seed_pt)
    eta, phi, core_pt = merge_cores(seed_eta, seed_phi, seed_pt * CHARGED_FRACTION)
    core = _assign(deta, dphi, jet, eta, phi, core_pt)
    # the hardest track outside every core seeds one more (radiation, a lost soft prong)
    free = np.flatnonzero(core < 0)
    order = free[np.lexsort((-pt[free], jet[free]))]
    first = order[np.r_[True, jet[order][1:] != jet[order][:-1]]] if len(order) else order
    extra = np.zeros((n, 3))
    extra[jet[first]] = np.stack([deta[first], dphi[first], pt[first]], axis=1)
    eta = np.concatenate([eta, extra[:, :1]], axis=1)
    phi = np.concatenate([phi, extra[:, 1:2]], axis=1)
    core_pt = np.concatenate([core_pt, extra[:, 2:]], axis=1)
    K = core_pt.shape[1]
    core = _assign(deta, dphi, jet, eta, phi, core_pt)
    # re-measured from the tracks: the radius follows the track jet's own pt
    eta, phi, core_pt, _ = _remeasure(deta, dphi, pt, jet, core, n, K)
    eta, phi, core_pt = merge_cores(eta, phi, core_pt)
    core = _assign(deta, dphi, jet, eta, phi, core_pt)
    _, _, core_pt, count = _remeasure(deta, dphi, pt, jet, core, n, K)
    kept = (core_pt >= MIN_PT) & (count >= MIN_TRACKS)
    ranked = np.where(kept, core_pt, -1.0)
    rank = np.argsort(np.argsort(-ranked, axis=1, kind="stable"), axis=1)
    index = np.where(kept & (rank < MAX_SUBJETS), rank, -1)
    return np.where(core >= 0, index[jet, np.maximum(core, 0)], -1).astype(np.int32)
