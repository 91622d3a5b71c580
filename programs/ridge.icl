# ridge.icl — online ridge regression by Sherman–Morrison updates over all n examples.
#
# Computes, at every x̃_k column, the ridge(λ) prediction from examples 1..k−1:
#     out = x_kᵀ (λI + Σ_{i<k} x_i x_iᵀ)⁻¹ Σ_{i<k} x_i y_i.
# Reproduces the paper's Theorem 2 (Akyürek et al. 2023, Appendix B: one Sherman–Morrison step
# from A₀⁻¹ = I/λ), run over all n examples like the paper's multi-example remark (O(n) depth).
#
# Column-parallel trick: `mov xp <- x from prev` puts x_i at the ỹ_i column (2i−1); then
# `mov xi <- xp from col(2*i - 1)` gives x_i to every column t ≥ 2i−1 and 0 to earlier ones
# (likewise y_i). A Sherman–Morrison update with x = 0, y = 0 is the identity (u = 0, q = 0,
# b unchanged), so after the loop column t holds ridge on exactly the examples whose ỹ column is
# ≤ t; at x̃_k (t = 2k−2) those are examples 1..k−1.
#
# Sherman–Morrison: with A = M⁻¹ symmetric, (M + x xᵀ)⁻¹ = A − (A x)(xᵀ A)/(1 + xᵀ A x)
# = A − u uᵀ/(1 + s), u = A x (xᵀA = uᵀ by symmetry), s = xᵀ u.
# Per example the dependent chain is u → {s, O} → den → q → A: 5 sequential steps (the movs and
# the b update do not depend on A and can be packed beside them).

param d = 4
param n = 8
param lambda = 0.5
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg xp: vec[d]       # x_i at the ỹ_i column
reg xi: vec[d]       # example i's x at columns ≥ 2i−1, else 0
reg yi: scalar       # example i's y at columns ≥ 2i−1, else 0
reg A: mat[d, d]     # (λI + Σ x xᵀ)⁻¹ over the examples seen so far
reg b: vec[d]        # Σ x y over the examples seen so far
reg u: vec[d]
reg s: scalar
reg den: scalar
reg O: mat[d, d]
reg q: mat[d, d]
reg xy: vec[d]
reg w: vec[d]
reg out: scalar

# Ranges (each holds in exact arithmetic; the slack factor 2 on A and q covers f64 rounding).
# A = M⁻¹ with M = λI + Σ x xᵀ ⪰ λI, so A is SPD with eigenvalues in (0, 1/λ] and
# |A_jk| ≤ ‖A‖₂ ≤ 1/λ.
assume A in [-2/lambda, 2/lambda]
# u = A x: |u_j| ≤ ‖A‖₂‖x‖₂ ≤ (1/λ)·√d·xmax ≤ d·xmax/λ.
assume u in [-d*xmax/lambda, d*xmax/lambda]
# s = xᵀ A x ∈ [0, ‖A‖₂‖x‖₂²] ⊆ [0, d·xmax²/λ]; den = 1 + s ≥ 1 (in f64 too: s ≥ 0 and
# rounding is monotone).
assume den in [1, 1 + d*xmax*xmax/lambda]
# O = u uᵀ: |O_jk| ≤ ‖u‖₂² ≤ d·xmax²/λ².
assume O in [-d*xmax*xmax/(lambda*lambda), d*xmax*xmax/(lambda*lambda)]
# q = A x xᵀ A/(1 + xᵀ A x) is PSD and A − q = (M + x xᵀ)⁻¹ ≻ 0, so 0 ⪯ q ⪯ A and
# |q_jk| ≤ ‖q‖₂ ≤ ‖A‖₂ ≤ 1/λ.
assume q in [-2/lambda, 2/lambda]
# b = Σ_{i ≤ n} x_i y_i: |b_j| ≤ n·xmax·ymax.
assume b in [-n*xmax*ymax, n*xmax*ymax]
# w = A b: |w_j| ≤ ‖A‖₂‖b‖₂ ≤ (1/λ)·√d·n·xmax·ymax ≤ d·n·xmax·ymax/λ.
assume w in [-d*n*xmax*ymax/lambda, d*n*xmax*ymax/lambda]

mov xp <- x from prev
aff A <- (1/lambda) * I
aff b <- 0
for i in 1..=n {
    mov xi <- xp from col(2*i - 1)
    mov yi <- y from col(2*i - 1)
    mul u <- A * xi
    mul s <- xi^T * u
    mul O <- u * u^T
    aff den <- s + 1
    div q <- O / |den|
    aff A <- A - q
    mul xy <- xi * yi
    aff b <- b + xy
}
mul w <- A * b
mul out <- w^T * x
output out
