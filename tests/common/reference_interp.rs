//! The tests' one reference interpreter of the IR: the meaning of a program (docs/LANGUAGE.md) in
//! plain f64 loops, per column, written independently of `icl::interp` and of the compiler.

use icl::ir::{operand_index, AffTerm, OpKind, Operand, Program, RegId, RegKind};

/// `regs[reg.index()][column][element]`.
type Registers = Vec<Vec<Vec<f64>>>;

/// The output register's first element at every column of `tokens` (one token per column).
pub fn interpret(p: &Program, tokens: &[Vec<f64>]) -> Vec<f64> {
    let t_n = tokens.len();
    let mut regs: Registers = p
        .registers
        .iter()
        .map(|r| match r.kind {
            RegKind::Input(b) => (0..t_n)
                .map(|t| {
                    (0..r.shape.size())
                        .map(|e| b.value(t, &tokens[t], e))
                        .collect()
                })
                .collect(),
            RegKind::Work => vec![vec![0.0; r.shape.size()]; t_n],
        })
        .collect();
    for op in &p.ops {
        let new: Vec<Vec<f64>> = (0..t_n)
            .map(|t| match &op.kind {
                OpKind::Mov { src, pattern, .. } => mov(p, &regs, *src, &pattern.sources(t)),
                OpKind::Mul { a, b, .. } => mul(p, &regs, *a, *b, t),
                OpKind::Div { num, den, .. } => {
                    let dv = regs[den.index()][t][0].abs();
                    regs[num.index()][t].iter().map(|x| x / dv).collect()
                }
                OpKind::Aff { terms, bias, .. } => aff(p, &regs, terms, bias, t),
            })
            .collect();
        regs[op.kind.dst().index()] = new;
    }
    (0..t_n).map(|t| regs[p.output.index()][t][0]).collect()
}

/// `mov`: the mean of `src` over the pattern's source columns (0 where there is none).
fn mov(p: &Program, regs: &Registers, src: RegId, sources: &[usize]) -> Vec<f64> {
    let mut v = vec![0.0; p.reg(src).shape.size()];
    for &s in sources {
        for (e, x) in v.iter_mut().enumerate() {
            *x += regs[src.index()][s][e];
        }
    }
    if !sources.is_empty() {
        for x in &mut v {
            *x /= sources.len() as f64;
        }
    }
    v
}

/// `mul`: the matrix product of the two operands (each possibly transposed) in column `t`.
fn mul(p: &Program, regs: &Registers, a: Operand, b: Operand, t: usize) -> Vec<f64> {
    let (sa, sb) = (p.operand_shape(a), p.operand_shape(b));
    let (ra, rb) = (p.reg(a.reg).shape, p.reg(b.reg).shape);
    let mut v = vec![0.0; sa.rows * sb.cols];
    for i in 0..sa.rows {
        for c in 0..sb.cols {
            for j in 0..sa.cols {
                v[i * sb.cols + c] += regs[a.reg.index()][t][operand_index(ra, a.transposed, i, j)]
                    * regs[b.reg.index()][t][operand_index(rb, b.transposed, j, c)];
            }
        }
    }
    v
}

/// `aff`: `bias + Σ coef · operand` in column `t`, every operand flattened row-major after its
/// transposition.
fn aff(p: &Program, regs: &Registers, terms: &[AffTerm], bias: &[f64], t: usize) -> Vec<f64> {
    let mut v = bias.to_vec();
    for term in terms {
        let sh = p.operand_shape(term.src);
        let rs = p.reg(term.src.reg).shape;
        let n = sh.size();
        for (e, acc) in v.iter_mut().enumerate() {
            for j in 0..n {
                let (i0, j0) = (j / sh.cols, j % sh.cols);
                *acc += term.coef[e * n + j]
                    * regs[term.src.reg.index()][t][operand_index(rs, term.src.transposed, i0, j0)];
            }
        }
    }
    v
}
