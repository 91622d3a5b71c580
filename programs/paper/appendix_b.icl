# appendix_b.icl — the paper's Theorem-2 program (Akyürek et al. 2023, Appendix B), transcribed.
#
# One Sherman–Morrison update of A₀⁻¹ = I/λ with example 1, then the ridge prediction:
#     w′ = (λI + x₁x₁ᵀ)⁻¹ x₁ y₁ = (I/λ − (I/λ)x₁x₁ᵀ(I/λ)/(1 + x₁ᵀ(I/λ)x₁)) x₁ y₁,
#     prediction w′ᵀx₂ at column 2 (x̃_2).
# n = 1: three columns x̃_1, ỹ_1, x̃_2. Registers are pinned to the paper's own rows (0-based,
# half-open; D = d²; y is row 0 and x rows 1..1+d). Paper step numbers are marked.
#
# Fixed typo: step 14 is mul (1,d,1) (the paper prints (d,1,1), without a comma).
# Kept as in the paper: step 2 (x y) is dead code.
# Deviations forced by our semantics:
# - `mov` is positional (every column reads its predecessor), and the inputs are read-only, so
#   the moved x is its own register xm, pinned above the paper's rows (3+5d+3D); steps 2, 4, 5,
#   7 and 11 read xm where the paper reads rows 1..1+d of column 1.
# - Step 8 is in place in the paper (row 1+4d+2D). An assumption holds after *every* write of a
#   register, and the denominator's `>= 1` does not hold for step 7's value xᵀA₀⁻¹x, so step 8
#   writes a separate register den. It cannot share s's row either: s is still read by the
#   operation that writes den, so both are live there; den is pinned above the paper's rows.
# - Steps 13/14: w′ reaches column 2 from column 1; column 0 gets 0, so the output at x̃_1 is 0.

param d = 3
param n = 1
param lambda = 0.5
param D = d*d
param xmax = 6
param ymax = 50

assume x in [-xmax, xmax]
assume y in [-ymax, ymax]

reg xy: vec[d] @ 1 + d                     # step 2 (dead)
reg A: mat[d, d] @ 1 + 2*d                 # A₀⁻¹, then A₁⁻¹ in place
reg u: vec[d] @ 1 + 2*d + D                # A₀⁻¹x
reg v: mat[1, d] @ 1 + 3*d + D             # xᵀA₀⁻¹ (a row)
reg O: mat[d, d] @ 1 + 4*d + D             # outer product A₀⁻¹x xᵀA₀⁻¹
reg s: scalar @ 1 + 4*d + 2*D              # xᵀA₀⁻¹x
reg den: scalar @ 3 + 6*d + 3*D            # 1 + xᵀA₀⁻¹x (deviation: own row, see above)
reg q: mat[d, d] @ 2 + 4*d + 2*D           # correction term
reg z: vec[d] @ 2 + 4*d + 3*D              # A₁⁻¹x, then w′ = A₁⁻¹x y in place
reg out: scalar @ 2 + 5*d + 3*D            # w′ᵀx₂
reg xm: vec[d] @ 3 + 5*d + 3*D             # deviation: the moved x

# den = 1 + xᵀ(I/λ)x = 1 + |x|²/λ ≥ 1 (λ > 0); the division needs it away from 0.
assume den >= 1

mov xm <- x from prev                      # step 1: x₁ into column 1
mul xy <- xm * y                           # step 2: mul (d,1,1), never used
aff A <- (1/lambda) * I                    # step 3: bias = vec(I/λ)
mul u <- A * xm                            # step 4: mul (d,d,1)
mul v <- xm^T * A                          # step 5: mul (1,d,d)
mul O <- u * v                             # step 6: mul (d,1,d)
mul s <- v * xm                            # step 7: mul (1,d,1)
aff den <- s + 1                           # step 8: W1 = 1, b = 1
div q <- O / |den|                         # step 9
aff A <- A - q                             # step 10: W1 = I, W2 = −I, in place
mul z <- A * xm                            # step 11: mul (d,d,1)
mul z <- z * y                             # step 12: mul (d,1,1), in place
mov z <- z from prev                       # step 13: w′ to column 2
mul out <- z^T * x                         # step 14: mul (1,d,1) (typo fixed)
output out
