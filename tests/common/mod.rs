//! Shared helpers of the integration tests: hand-built programs, the one reference interpreter of
//! the IR semantics ([`reference_interp`]) and the one reference forward pass of a model
//! directory's tensors ([`reference_forward`]), both written independently of the library, and
//! prompts.
#![allow(dead_code)]
pub mod handbuilt;

pub mod reference_forward;
pub mod reference_interp;

// Each test binary uses some of the shared helpers only.
#[allow(unused_imports)]
pub use reference_forward::forward;
#[allow(unused_imports)]
pub use reference_interp::interpret;

use icl::ir::*;
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
                output: RegId(0),
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
        RegId(self.p.registers.len() - 1)
    }
    pub fn reg(&mut self, name: &str, rows: usize, cols: usize) -> RegId {
        self.p.registers.push(Register {
            name: name.into(),
            shape: Shape::mat(rows, cols),
            kind: RegKind::Work,
            pinned: None,
            span: Span::default(),
        });
        RegId(self.p.registers.len() - 1)
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

/// Compile `program` (a path relative to the repository) with `sets` into `dir/model` through
/// the same pipeline as `icl-compile`, without validation prompts; returns the model directory
/// and the outcome.
pub fn compile_program(
    program: &str,
    sets: &[(&str, &str)],
    dir: &std::path::Path,
) -> (std::path::PathBuf, icl::pipeline::Outcome) {
    compile_program_as(program, sets, icl::model::config::DType::F64, dir)
}

/// [`compile_program`] with the weights written in `dtype`.
pub fn compile_program_as(
    program: &str,
    sets: &[(&str, &str)],
    dtype: icl::model::config::DType,
    dir: &std::path::Path,
) -> (std::path::PathBuf, icl::pipeline::Outcome) {
    compile_program_to(program, sets, icl::pipeline::Target::Exact, dtype, dir)
}

/// [`compile_program`] to `target` with the weights written in `dtype`.
pub fn compile_program_to(
    program: &str,
    sets: &[(&str, &str)],
    target: icl::pipeline::Target,
    dtype: icl::model::config::DType,
    dir: &std::path::Path,
) -> (std::path::PathBuf, icl::pipeline::Outcome) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(program);
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = dir.join("model");
    let opts = icl::pipeline::Options {
        prompts: 0,
        dtype,
        target,
        ..Default::default()
    };
    let outcome = icl::pipeline::run(&path, &sets, &out, &opts)
        .unwrap_or_else(|e| panic!("compiling {program} {sets:?}: {e:#}"));
    (out, outcome)
}

/// Compile `programs/ridge.icl` at (d, n) into a fresh temporary folder (see
/// [`compile_program`]). Returns the folder guard, the model directory inside it and the outcome.
pub fn compile_ridge(
    d: usize,
    n: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    icl::pipeline::Outcome,
) {
    let dir = tempfile::tempdir().unwrap();
    let (d, n) = (d.to_string(), n.to_string());
    let (out, outcome) = compile_program("programs/ridge.icl", &[("d", &d), ("n", &n)], dir.path());
    (dir, out, outcome)
}
