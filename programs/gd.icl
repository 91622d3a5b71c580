# gd.icl — one step of full-batch gradient descent from w₀ = 0 on the summed squared loss.
#
# At every x̃_k column: out = wᵀ x_k with w = 2α Σ_{i<k} x_i y_i, the paper's GD step
# w = w₀ − 2α(XᵀX w₀ − Xᵀy + λ w₀) at w₀ = 0 (Akyürek et al. 2023, §4.3 baseline GD(α);
# Theorem 1's update summed over all examples). Depth does not grow with n.
#
# `mov xp <- x from prev` puts x_i at the ỹ_i column, where y = y_i, so p = x_i y_i there (and
# 0 at x̃ columns, which mean(y) never reads). mean(y) at x̃_k averages the k−1 ỹ columns before
# it: (1/(k−1)) Σ_{i<k} x_i y_i (0 when k = 1); `count` is k−1 at x̃_k, so s = Σ_{i<k} x_i y_i.

param d = 4
param n = 8
param alpha = 0.01
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg xp: vec[d]
reg p: vec[d]
reg m: vec[d]
reg s: vec[d]
reg w: vec[d]
reg out: scalar

mov xp <- x from prev
mul p <- xp * y
mov m <- p from mean(y)
mul s <- m * count
aff w <- (2*alpha) * s
mul out <- w^T * x
output out
