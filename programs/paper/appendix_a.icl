# appendix_a.icl — the paper's Theorem-1 program (Akyürek et al. 2023, Appendix A), transcribed.
#
# One step of gradient descent on example 1 from a fixed initial w₀ (baked into the weights):
#     w′ = w₀ − 2α(x₁x₁ᵀw₀ − x₁y₁ + λw₀),   prediction w′ᵀx₂ at column 2 (x̃_2).
# n = 1: three columns x̃_1, ỹ_1, x̃_2. Registers are pinned to the paper's own rows (0-based,
# half-open; y is row 0 and x rows 1..1+d, supplied by the embedding). Paper step numbers are
# marked on each operation.
#
# Fixed typo: step 6 adds +λw (the paper prints −λ in the list and −2λ in the trace; only +λ
# with step 7's −2α reproduces the update above).
# Deviations forced by our semantics:
# - `mov` is positional: it writes every column (column t reads column t−1). The paper's step 1
#   copies x₁ into rows 1..1+d of column 1; here that would also overwrite x₂ in column 2 with
#   column 1's zeros, and the inputs are read-only anyway. So the moved x is its own register xm,
#   pinned above the paper's rows (3+4d), and steps 2–4 read xm where the paper reads rows 1..1+d.
# - Step 8 likewise moves w′ into every column from its predecessor; only column 2 is used.
#   Column 0 gets 0, so the output at x̃_1 is 0 (the paper only defines column 2).

param d = 3
param n = 1
param alpha = 0.1
param lambda = 0.1
param w0 = [0.5, -0.25, 1.0]    # the initial w, one entry per feature (override with d)
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg yhat: scalar @ 1 + d          # ŷ = w₀ᵀx
reg r: scalar @ 2 + d             # r = ŷ − y
reg g: vec[d] @ 3 + d             # g = x r
reg w: vec[d] @ 3 + 2*d           # w₀, overwritten in place by w′
reg gl: vec[d] @ 3 + 3*d          # g + λw
reg out: scalar @ 3 + 3*d         # the paper reuses row 3+3d for the output (gl is dead by then)
reg xm: vec[d] @ 3 + 4*d          # deviation: the moved x (see above)

mov xm <- x from prev             # step 1: x₁ into column 1
aff yhat <- w0^T * xm             # step 2: W1 = w₀ᵀ
aff r <- yhat - y                 # step 3
mul g <- xm * r                   # step 4: mul (d,1,1)
aff w <- w0                       # step 5: bias = w₀
aff gl <- g + lambda * w          # step 6: W1 = I, W2 = +λI (typo fixed)
aff w <- w - (2*alpha) * gl       # step 7: w′ = w − 2α(g + λw), in place
mov w <- w from prev              # step 8: w′ to column 2
mul out <- w^T * x                # step 9: mul (1,d,1), w′ᵀx₂ at row 3+3d, column 2
output out
