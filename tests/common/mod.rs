//! Shared helpers for the lowering tests: hand-built programs, a reference interpreter of the
//! IR semantics (DESIGN §2, written independently of the compiler), and an independent f64 forward
//! pass of a model directory's tensors (docs/FORMATS.md).
#![allow(dead_code)]
pub mod handbuilt;

use icl::ir::*;
use icl::model::config::ModelConfig;
use icl::tensors::NamedTensors;
use std::collections::BTreeMap;

pub struct Builder {
    pub p: Program,
}

impl Builder {
    pub fn new(name: &str, d: usize, n: usize) -> Builder {
        Builder {
            p: Program {
                source: Source {
                    name: name.into(),
                    text: String::new(),
                },
                params: BTreeMap::new(),
                overrides: vec![],
                d,
                n,
                registers: vec![],
                ops: vec![],
                assumptions: vec![],
                output: 0,
            },
        }
    }
    pub fn input(&mut self, b: Builtin) -> RegId {
        self.p.registers.push(Register {
            name: b.name().into(),
            shape: b.shape(self.p.d),
            kind: RegKind::Input(b),
            pinned: None,
            span: Span::default(),
        });
        self.p.registers.len() - 1
    }
    pub fn reg(&mut self, name: &str, rows: usize, cols: usize) -> RegId {
        self.p.registers.push(Register {
            name: name.into(),
            shape: Shape::mat(rows, cols),
            kind: RegKind::Work,
            pinned: None,
            span: Span::default(),
        });
        self.p.registers.len() - 1
    }
    pub fn pin(&mut self, r: RegId, row: usize) {
        self.p.registers[r].pinned = Some(row);
    }
    fn push(&mut self, kind: OpKind, text: String) {
        let line = self.p.ops.len() as u32 + 1;
        self.p.ops.push(Op {
            kind,
            span: Span {
                start: 0,
                end: 0,
                line,
                col: 1,
            },
            text,
            iteration: vec![],
        });
    }
    pub fn mov(&mut self, dst: RegId, src: RegId, pattern: Pattern) {
        let t = format!(
            "mov {} <- {} from {pattern}",
            self.p.registers[dst].name, self.p.registers[src].name
        );
        self.push(OpKind::Mov { dst, src, pattern }, t);
    }
    pub fn mul(&mut self, dst: RegId, a: (RegId, bool), b: (RegId, bool)) {
        let t = format!(
            "mul {} <- {}{} * {}{}",
            self.p.registers[dst].name,
            self.p.registers[a.0].name,
            if a.1 { "^T" } else { "" },
            self.p.registers[b.0].name,
            if b.1 { "^T" } else { "" }
        );
        self.push(
            OpKind::Mul {
                dst,
                a: Operand {
                    reg: a.0,
                    transposed: a.1,
                },
                b: Operand {
                    reg: b.0,
                    transposed: b.1,
                },
            },
            t,
        );
    }
    pub fn div(&mut self, dst: RegId, num: RegId, den: RegId) {
        let t = format!(
            "div {} <- {} / |{}|",
            self.p.registers[dst].name, self.p.registers[num].name, self.p.registers[den].name
        );
        self.push(OpKind::Div { dst, num, den }, t);
    }
    /// `dst <- Σ c_i·src_i + bias` with scalar coefficients (identity-shaped; a scalar source is
    /// broadcast) and a scalar bias.
    pub fn aff(&mut self, dst: RegId, terms: &[(f64, RegId)], bias: f64) {
        let nd = self.p.registers[dst].shape.size();
        let mut ts = Vec::new();
        let mut text = format!("aff {} <-", self.p.registers[dst].name);
        for &(c, src) in terms {
            let ns = self.p.registers[src].shape.size();
            let mut coef = vec![0.0; nd * ns];
            for e in 0..nd {
                if ns == 1 {
                    coef[e] = c;
                } else {
                    coef[e * ns + e] = c;
                }
            }
            ts.push(AffTerm {
                src: Operand {
                    reg: src,
                    transposed: false,
                },
                coef,
            });
            text += &format!(" {c}*{}", self.p.registers[src].name);
        }
        text += &format!(" + {bias}");
        self.push(
            OpKind::Aff {
                dst,
                terms: ts,
                bias: vec![bias; nd],
            },
            text,
        );
    }
    /// `dst <- bias` with a full bias vector.
    pub fn constant(&mut self, dst: RegId, bias: Vec<f64>) {
        let t = format!("aff {} <- const", self.p.registers[dst].name);
        self.push(
            OpKind::Aff {
                dst,
                terms: vec![],
                bias,
            },
            t,
        );
    }
    pub fn assume(&mut self, reg: RegId, lo: f64, hi: f64) {
        self.p.assumptions.push(Assumption {
            reg,
            bound: Bound::Range { lo, hi },
            span: Span::default(),
            text: format!("assume {} in [{lo}, {hi}]", self.p.registers[reg].name),
        });
    }
    pub fn output(mut self, r: RegId) -> Program {
        self.p.output = r;
        self.p
    }
}

/// Reference semantics: the output register at every column.
pub fn interpret(p: &Program, tokens: &[Vec<f64>]) -> Vec<f64> {
    let t_n = tokens.len();
    // regs[reg][t][elem]
    let mut regs: Vec<Vec<Vec<f64>>> = p
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
        let new: Vec<Vec<f64>> = match &op.kind {
            OpKind::Mov { src, pattern, .. } => (0..t_n)
                .map(|t| {
                    let srcs = pattern.sources(t);
                    let size = p.reg(*src).shape.size();
                    let mut v = vec![0.0; size];
                    for &s in &srcs {
                        for e in 0..size {
                            v[e] += regs[*src][s][e];
                        }
                    }
                    if !srcs.is_empty() {
                        for x in &mut v {
                            *x /= srcs.len() as f64;
                        }
                    }
                    v
                })
                .collect(),
            OpKind::Mul { a, b, .. } => {
                let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
                let (ra, rb) = (p.reg(a.reg).shape, p.reg(b.reg).shape);
                (0..t_n)
                    .map(|t| {
                        let mut v = vec![0.0; sa.rows * sb.cols];
                        for i in 0..sa.rows {
                            for c in 0..sb.cols {
                                for j in 0..sa.cols {
                                    v[i * sb.cols + c] += regs[a.reg][t]
                                        [operand_index(ra, a.transposed, i, j)]
                                        * regs[b.reg][t][operand_index(rb, b.transposed, j, c)];
                                }
                            }
                        }
                        v
                    })
                    .collect()
            }
            OpKind::Div { num, den, .. } => (0..t_n)
                .map(|t| {
                    let dv = regs[*den][t][0].abs();
                    regs[*num][t].iter().map(|x| x / dv).collect()
                })
                .collect(),
            OpKind::Aff { terms, bias, .. } => (0..t_n)
                .map(|t| {
                    let mut v = bias.clone();
                    for term in terms {
                        let sh = p.operand_shape(term.src);
                        let rs = p.reg(term.src.reg).shape;
                        let n = sh.size();
                        for (e, acc) in v.iter_mut().enumerate() {
                            for j in 0..n {
                                let (i0, j0) = (j / sh.cols, j % sh.cols);
                                *acc += term.coef[e * n + j]
                                    * regs[term.src.reg][t]
                                        [operand_index(rs, term.src.transposed, i0, j0)];
                            }
                        }
                    }
                    v
                })
                .collect(),
        };
        regs[op.kind.dst()] = new;
    }
    (0..t_n).map(|t| regs[p.output][t][0]).collect()
}

/// Independent forward pass (docs/FORMATS.md) in f64: the read-out at every column.
pub fn forward(cfg: &ModelConfig, w: &NamedTensors, tokens: &[Vec<f64>]) -> Vec<f64> {
    let t_n = tokens.len();
    let width = cfg.width;
    let get = |n: &str| {
        w.get(n)
            .unwrap_or_else(|| panic!("missing tensor {n}"))
            .clone()
    };
    let matvec = |m: &icl::tensors::RawTensor, x: &[f64]| -> Vec<f64> {
        let (r, c) = (m.shape[0], m.shape[1]);
        (0..r)
            .map(|i| (0..c).map(|j| m.data[i * c + j] * x[j]).sum())
            .collect()
    };
    let embed = get("embed.weight");
    let eb = get("embed.bias");
    let pos = get("pos.weight");
    let mut h: Vec<Vec<f64>> = (0..t_n)
        .map(|t| {
            let e = matvec(&embed, &tokens[t]);
            (0..width)
                .map(|r| e[r] + eb.data[r] + pos.data[t * width + r])
                .collect()
        })
        .collect();
    for (l, lc) in cfg.layers.iter().enumerate() {
        let pre = format!("layers.{l}");
        if let Some(a) = lc.attn {
            assert!(a.bias && !a.qk && a.zero_attn);
            let wv = get(&format!("{pre}.attn.v.weight"));
            let bv = get(&format!("{pre}.attn.v.bias"));
            let wo = get(&format!("{pre}.attn.o.weight"));
            let bo = get(&format!("{pre}.attn.o.bias"));
            let bias = get(&format!("{pre}.attn.bias"));
            let ml = cfg.max_len;
            let vals: Vec<Vec<f64>> = h
                .iter()
                .map(|x| {
                    matvec(&wv, x)
                        .iter()
                        .zip(&bv.data)
                        .map(|(a, b)| a + b)
                        .collect()
                })
                .collect();
            let inner = a.heads * a.head_dim;
            let mut out = Vec::with_capacity(t_n);
            for t in 0..t_n {
                let mut o = vec![0.0; inner];
                for hh in 0..a.heads {
                    let b = |s: usize| bias.data[(hh * ml + t) * (ml + 1) + s];
                    let mut keys: Vec<(Option<usize>, f64)> =
                        (0..=t).map(|s| (Some(s), b(s))).collect();
                    keys.push((None, b(ml)));
                    let m = keys.iter().map(|k| k.1).fold(f64::NEG_INFINITY, f64::max);
                    let ws: Vec<f64> = keys.iter().map(|k| (k.1 - m).exp()).collect();
                    let z: f64 = ws.iter().sum();
                    for (k, wgt) in keys.iter().zip(&ws) {
                        if let Some(s) = k.0 {
                            for c in 0..a.head_dim {
                                let i = hh * a.head_dim + c;
                                o[i] += wgt / z * vals[s][i];
                            }
                        }
                    }
                }
                let y = matvec(&wo, &o);
                out.push(
                    y.iter()
                        .zip(&bo.data)
                        .map(|(a, b)| a + b)
                        .collect::<Vec<f64>>(),
                );
            }
            for t in 0..t_n {
                for r in 0..width {
                    h[t][r] += out[t][r];
                }
            }
        }
        let m: Vec<Vec<f64>> = if let Some(nc) = lc.norm {
            let nw = get(&format!("{pre}.norm.weight"));
            let nb = get(&format!("{pre}.norm.bias"));
            h.iter()
                .map(|x| {
                    let mu = x.iter().sum::<f64>() / width as f64;
                    let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / width as f64;
                    let sd = (var + nc.eps).sqrt();
                    (0..width)
                        .map(|r| (x[r] - mu) / sd * nw.data[r] + nb.data[r])
                        .collect()
                })
                .collect()
        } else {
            h.clone()
        };
        if let Some(mc) = lc.mlp {
            let g = get(&format!("{pre}.mlp.gate.weight"));
            let gb = get(&format!("{pre}.mlp.gate.bias"));
            let u = get(&format!("{pre}.mlp.up.weight"));
            let ub = get(&format!("{pre}.mlp.up.bias"));
            let dn = get(&format!("{pre}.mlp.down.weight"));
            let db = get(&format!("{pre}.mlp.down.bias"));
            for t in 0..t_n {
                let gv = matvec(&g, &m[t]);
                let uv = matvec(&u, &m[t]);
                let act: Vec<f64> = (0..mc.hidden)
                    .map(|i| (gv[i] + gb.data[i]) * (uv[i] + ub.data[i]))
                    .collect();
                let y = matvec(&dn, &act);
                for r in 0..width {
                    h[t][r] += y[r] + db.data[r];
                }
            }
        }
    }
    let ro = get("readout.weight");
    let rb = get("readout.bias");
    h.iter().map(|x| matvec(&ro, x)[0] + rb.data[0]).collect()
}

/// Deterministic pseudo-random numbers in [-1, 1) (xorshift), so tests need no RNG crate setup.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Tokens of a prompt with x uniform in [-1,1]^d, y = wᵀx with w uniform in [-1,1]^d.
pub fn tokens(d: usize, n: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let w: Vec<f64> = (0..d).map(|_| rng.next()).collect();
    let mut out = Vec::new();
    for k in 0..=n {
        let x: Vec<f64> = (0..d).map(|_| rng.next()).collect();
        let y: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
        let mut tx = vec![0.0];
        tx.extend(&x);
        out.push(tx);
        if k < n {
            let mut ty = vec![0.0; d + 1];
            ty[0] = y;
            out.push(ty);
        }
    }
    out
}

/// Compile `programs/ridge.icl` at (d, n) into a fresh temporary folder through the same
/// pipeline as `icl-compile` (no validation prompts). Returns the folder guard, the model
/// directory inside it and the outcome.
pub fn compile_ridge(
    d: usize,
    n: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    icl::pipeline::Outcome,
) {
    let program = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/programs/ridge.icl"));
    let sets = [
        ("d".to_string(), d.to_string()),
        ("n".to_string(), n.to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ridge");
    let opts = icl::pipeline::Options {
        prompts: 0,
        ..Default::default()
    };
    let outcome = icl::pipeline::run(program, &sets, &out, &opts)
        .unwrap_or_else(|e| panic!("compiling ridge.icl at d={d}, n={n}: {e:#}"));
    (dir, out, outcome)
}
