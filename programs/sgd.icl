# sgd.icl — one pass of SGD (batch size 1) from w₀ = 0 over all n examples.
#
# At every x̃_k column: out = w_{k−1}ᵀ x_k, where
#     w_i = w_{i−1} − 2α(x_i x_iᵀ w_{i−1} − x_i y_i + λ w_{i−1}).
# This is the paper's SGD(α) baseline (Akyürek et al. 2023, §4.3) and the multi-step extension of
# its Theorem 1 / Appendix A (one GD step on one example), with O(n) depth.
#
# Column-parallel trick (see ridge.icl): xi, yi hold example i at columns t ≥ 2i−1 and 0 before.
# A zero example still decays w through the λw term, so that term is gated by `vis`, 1 exactly
# at the columns where example i is visible: at earlier columns every term is 0 and w is unchanged.
# Per example the dependent chain is r → g → w: 3 sequential steps (lw beside r).
# No register assumptions are needed: there is no division, and the unrolled program is a
# finite composition of products and sums, so interval analysis stays finite.

param d = 4
param n = 8
param alpha = 0.01
param lambda = 0.0                # real (not integer), so it can be overridden with any λ
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg xp: vec[d]
reg xi: vec[d]
reg yi: scalar
reg vis: scalar
reg w: vec[d]
reg r: scalar
reg g: vec[d]
reg gy: vec[d]
reg lw: vec[d]
reg out: scalar

mov xp <- x from prev
aff w <- 0
for i in 1..=n {
    mov xi <- xp from col(2*i - 1)
    mov yi <- y from col(2*i - 1)
    mov vis <- one from col(2*i - 1)
    mul gy <- xi * yi                    # x_i y_i
    mul r <- xi^T * w                    # x_iᵀ w
    mul lw <- w * vis                    # w where example i is visible, else 0
    mul g <- xi * r                      # x_i x_iᵀ w
    aff w <- w - (2*alpha) * g + (2*alpha) * gy - (2*alpha*lambda) * lw
}
mul out <- w^T * x
output out
