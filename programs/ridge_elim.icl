# ridge_elim.icl — ridge regression whose depth does not grow with n: form the normal equations
# with mean patterns, then solve them by Gauss–Jordan elimination unrolled over the d pivots.
#
# At every x̃_k column: out = x_kᵀ w, with S w = b, S = λI + Σ_{i<k} x_i x_iᵀ, b = Σ_{i<k} x_i y_i
# (ridge(λ) on examples 1..k−1, like ridge.icl, but with O(d) depth instead of O(n)).
# Reproduces the paper's ridge baseline (Akyürek et al. 2023, §4.3,
# https://arxiv.org/abs/2211.15661); the paper builds ridge from Sherman–Morrison steps only
# (Theorem 2), whose depth grows with n. Works for every d: pivot k's row, column and element are
# picked by the aff selections `S[k, :]`, `S[:, k]`, `S[k, k]`, and e(k) is the unit-vector bias.
#
# Normal equations: `mov xp <- x from prev` puts x_i at the ỹ_i column, where y = y_i. There
# P = x_i x_iᵀ and py = x_i y_i; mean(y) at x̃_k averages the k−1 ỹ columns before it, and
# `count` = k−1 there, so (mean)·count is the sum (0 at x̃_1, where there is no ỹ column).
# A matrix times a scalar register is not a matrix product, so P is flattened to a d²-vector
# (aff with `I`: same row-major order) for the multiplication by count.
#
# Gauss–Jordan on S and b without pivoting, step k = 0..d−1 (0-based), piv = S_kk,
# r = S[k, :] (row k), c = S[:, k] − e_k (column k minus the unit vector), rn = r/piv, bn = b_k/piv:
#     S ← S − c rnᵀ,   b ← b − c bn
# Row i ≠ k: S_i − S_ik·S_k/piv eliminates column k; row k: S_k − (piv − 1)·S_k/piv = S_k/piv
# normalizes it (likewise for b). After the d steps S = I and b = S⁻¹b = w.
# Pivots: the k-th pivot of Gaussian elimination of the SPD S is the Schur complement
# S_kk − S_{k,<k} S_{<k,<k}⁻¹ S_{<k,k} (Gauss–Jordan's extra eliminations above the diagonal do not
# change row k's entries right of column k−1 before step k), and every Schur complement of S
# satisfies ≥ λ_min(S) ≥ λ because S ⪰ λI. So piv ≥ λ > 0 (and |piv| = piv); the assumption
# allows λ/2 for f64 rounding of a pivot that equals λ exactly (columns with fewer than d
# examples).
# Per k the dependent chain is four steps: {piv, r, c, bk} → {rn, bn} → {O, ob} → {S, b}.

param d = 4
param n = 8
param lambda = 0.5
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg xp: vec[d]
reg P: mat[d, d]
reg Pv: vec[d*d]
reg Mv: vec[d*d]
reg Sv: vec[d*d]
reg S: mat[d, d]
reg py: vec[d]
reg my: vec[d]
reg b: vec[d]
reg piv: scalar
reg r: vec[d]
reg c: vec[d]
reg rn: vec[d]
reg bk: scalar
reg bn: scalar
reg O: mat[d, d]
reg ob: vec[d]
reg out: scalar

assume piv >= lambda/2
# Ranges during the elimination (each holds in exact arithmetic; factor 2 covers f64 rounding).
# Let M = λ + n·xmax² bound the diagonal of S = XᵀX + λI. After k steps of Gauss–Jordan, S holds
# (i) e_j in the processed columns, (ii) the Schur complement S22 − S21 S11⁻¹ S12 ⪯ S22 (PSD,
# so |entries| ≤ its largest diagonal ≤ M) in the unprocessed block, and (iii) S11⁻¹ S12 in the
# processed rows, with |entries| ≤ ‖S11⁻¹‖₂‖S12‖₂ ≤ (1/λ)·d·M. Hence |S_ij| ≤ M·(1 + d/λ).
param smax = 2*(lambda + n*xmax*xmax)*(1 + d/lambda)
assume S in [-smax, smax]
# b holds S11⁻¹ b1 (|·| ≤ √d·n·xmax·ymax/λ) in processed rows and b2 − S21 S11⁻¹ b1
# (|·| ≤ n·xmax·ymax + d·M·d·n·xmax·ymax/λ) in the others.
param bmax = 2*n*xmax*ymax*(1 + d/lambda + d*d*(lambda + n*xmax*xmax)/lambda)
assume b in [-bmax, bmax]

mov xp <- x from prev
mul P <- xp * xp^T                 # x_i x_iᵀ at ỹ_i
aff Pv <- I * P                    # flatten (row-major, same order)
mov Mv <- Pv from mean(y)
mul Sv <- Mv * count               # Σ_{i<k} x_i x_iᵀ
aff S <- I * Sv + lambda * I       # S = XᵀX + λI
mul py <- xp * y                   # x_i y_i at ỹ_i
mov my <- py from mean(y)
mul b <- my * count                # b = Xᵀy
for k in 0..d {
    aff piv <- S[k, k]             # pivot S_kk
    aff r <- S[k, :]               # row k
    aff c <- S[:, k] - e(k)        # column k − e_k
    aff bk <- b[k]
    div rn <- r / |piv|            # S_k / piv
    div bn <- bk / |piv|           # b_k / piv
    mul O <- c * rn^T
    mul ob <- c * bn
    aff S <- S - O
    aff b <- b - ob
}
mul out <- b^T * x
output out
