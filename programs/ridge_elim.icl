# ridge_elim.icl — ridge regression whose depth does not grow with n: form the normal equations
# with mean patterns, then solve them by Gauss–Jordan elimination unrolled over the d pivots.
#
# At every x̃_k column: out = x_kᵀ w, with S w = b, S = λI + Σ_{i<k} x_i x_iᵀ, b = Σ_{i<k} x_i y_i
# (ridge(λ) on examples 1..k−1, like ridge.icl, but with O(d) depth instead of O(n)).
# Reproduces the paper's ridge baseline (Akyürek et al. 2023, §4.3); the paper builds ridge from
# Sherman–Morrison steps only (Theorem 2), whose depth grows with n.
#
# LIMITATION: d must be 4 (the paper's probing dimension). Gauss–Jordan needs the unit vectors
# e_k, and the language has no d-generic way to build them: every constant a program can form
# from scalars, `I` and d-free literals is invariant under permuting the coordinates, and e_k is
# not. Here e_k is a 4-entry literal whose entries are the Lagrange polynomials in k that are 1
# at j = k and 0 at the other j ∈ {1..4}; another d needs another literal (or a language
# addition such as a unit-vector coefficient).
#
# Normal equations: `mov xp <- x from prev` puts x_i at the ỹ_i column, where y = y_i. There
# P = x_i x_iᵀ and py = x_i y_i; mean(y) at x̃_k averages the k−1 ỹ columns before it, and
# `count` = k−1 there, so (mean)·count is the sum (0 at x̃_1, where there is no ỹ column).
# A matrix times a scalar register is not a matrix product, so P is flattened to a d²-vector
# (aff with `I`: same row-major order) for the multiplication by count.
#
# Gauss–Jordan on G = [S | b] without pivoting, step k with c = G e_k (column k), piv = c_k:
#     G ← G − (c − e_k)(e_kᵀ G)/piv
# (row i ≠ k: G_i − c_i G_k/piv eliminates column k; row k: G_k − (piv − 1)G_k/piv = G_k/piv).
# After the d steps S = I and b = S⁻¹b = w.
# Pivots: the k-th pivot of Gaussian elimination of the SPD S is the Schur complement
# S_kk − S_{k,<k} S_{<k,<k}⁻¹ S_{<k,k} (Gauss–Jordan's extra eliminations above the diagonal do not
# change row k's entries right of column k−1 before step k), and every Schur complement of S
# satisfies ≥ λ_min(S) ≥ λ because S ⪰ λI. So piv ≥ λ; the assumption allows λ/2 for f64
# rounding of a pivot that equals λ exactly (columns with fewer than d examples).

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
reg e: vec[d]
reg c: vec[d]
reg rS: mat[1, d]
reg rb: scalar
reg piv: scalar
reg cm: vec[d]
reg O: mat[d, d]
reg Ob: vec[d]
reg q: mat[d, d]
reg qb: vec[d]
reg out: scalar

assume piv >= lambda/2

mov xp <- x from prev
mul P <- xp * xp^T                 # x_i x_iᵀ at ỹ_i
aff Pv <- I * P                    # flatten (row-major, same order)
mov Mv <- Pv from mean(y)
mul Sv <- Mv * count               # Σ_{i<k} x_i x_iᵀ
aff S <- I * Sv + lambda * I       # S = XᵀX + λI
mul py <- xp * y                   # x_i y_i at ỹ_i
mov my <- py from mean(y)
mul b <- my * count                # b = Xᵀy
for k in 1..=d {
    # e_k for d = 4: entry j is Π_{m≠j} (k − m)/(j − m).
    aff e <- [(k-2)*(k-3)*(k-4)/(-6), (k-1)*(k-3)*(k-4)/2, (k-1)*(k-2)*(k-4)/(-2), (k-1)*(k-2)*(k-3)/6]
    mul c <- S * e                 # column k
    mul rS <- e^T * S              # row k of S
    mul rb <- e^T * b              # row k of b
    mul piv <- e^T * c             # S_kk
    aff cm <- c - e
    mul O <- cm * rS
    mul Ob <- cm * rb
    div q <- O / |piv|
    div qb <- Ob / |piv|
    aff S <- S - q
    aff b <- b - qb
}
mul out <- b^T * x
output out
