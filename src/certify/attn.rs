//! Attention normal form.
//!
//! With no Q/K projections, head h's scores are its additive bias alone. Entries 0 or −∞ make
//! the softmax exact: query t attends uniformly the keys Z_h(t) = {s ≤ t : bias[h,t,s] = 0}
//! (∪ the null key, value 0, when `zero_attn` and bias[h,t,max_len] = 0), so the real key s gets
//! weight 1/|Z_h(t)| if s ∈ Z_h(t). The attention output is then
//!   Attn(h)_t = Σ_h W_O^h Σ_s p_h(t,s) (W_V^h h_s + b_V^h) + b_O
//!             = Σ_P M_P Σ_s P(t,s) h_s + Σ_h W_O^h b_V^h (Σ_s p_h(t,s)) + b_O,
//! with M_P = Σ_{h : p_h = P} W_O^h W_V^h, grouping heads by equal attention matrices.
//! Expected: b_O = 0, W_O^h b_V^h = 0, and M_P as built from the step's operations:
//! `mov dst <- src from Pat` adds M_{Pat}[dst_e, src_e] = 1 and M_self[dst_e, dst_e] = −1
//! (overwrite); the attention half of `div dst <- num / |den|` adds M_self[p1, den] = P,
//! M_self[p1, p1] = −1, M_self[p2, den] = −P, M_self[p2, p2] = −1, M_self[dst_e, dst_e] = −1.
//! Every coefficient is compared exactly; rows no operation writes must get M = 0.
//!
//! [`check_attention`] derives the normal form from the weights ([`derive`]), builds the
//! expected one from the placed operations ([`expected`]) and compares them
//! ([`super::coeffs::compare`]).

use super::coeffs::{add, compare, Coeffs};
use super::div::check_layout_constant;
use super::error::{CertifyError, Part};
use super::exact::Dy;
use super::state::{check_operand, Content, Ctx, RowState, Step};
use super::structure::check_disjoint;
use super::weights::Stored;
use crate::ir::{OpId, OpKind, Pattern, RegId};
use crate::layout::{DivConstants, Layer, OpPart, PlacedOp, Row};
use crate::model::config::AttnConfig;
use crate::model::schema::Attention;
use std::collections::HashMap;
/// One query row of an attention matrix: the real keys attended (uniformly) and the number of
/// keys sharing the weight (null key included); `(vec![], 0)` when only the null key is read.
pub type PatRow = (Vec<u32>, u32);
/// An attention matrix over the certified columns.
pub type PatKey = Vec<PatRow>;

/// The attention matrix of a program pattern: uniform over `sources(t)`, null when empty.
pub fn pattern_key(p: Pattern, cols: usize) -> PatKey {
    (0..cols)
        .map(|t| {
            let s: Vec<u32> = p.sources(t).into_iter().map(|x| x as u32).collect();
            let n = s.len() as u32;
            (s, n)
        })
        .collect()
}

/// The identity pattern (each column reads itself): the residual-stream "self" head.
pub fn self_key(cols: usize) -> PatKey {
    (0..cols).map(|t| (vec![t as u32], 1)).collect()
}

/// What the attention half of a division leaves for its MLP half.
#[derive(Debug, Clone)]
pub struct PrepInfo {
    pub op: OpId,
    /// Payload scale P (rows p1, p2 hold +P·den, −P·den).
    pub scale: Dy,
}

fn describe_row(r: &PatRow) -> String {
    if r.0.is_empty() {
        return "only the null key (gets 0)".into();
    }
    let keys: Vec<String> = r.0.iter().map(|s| s.to_string()).collect();
    format!("keys {{{}}} with weight 1/{}", keys.join(", "), r.1)
}

/// The attention matrices met in one layer, interned in order of first appearance, with the
/// name the program gives those an operation uses (`self`, `prev`, `mean(y)`, …).
#[derive(Default)]
struct Patterns {
    keys: Vec<PatKey>,
    ids: HashMap<PatKey, usize>,
    names: Vec<Option<String>>,
}

impl Patterns {
    fn intern(&mut self, k: PatKey) -> usize {
        let (keys, names) = (&mut self.keys, &mut self.names);
        *self.ids.entry(k.clone()).or_insert_with(|| {
            keys.push(k);
            names.push(None);
            keys.len() - 1
        })
    }
}

/// A coefficient of the attention normal form: M_P[row, source row], keyed (row, P, source).
type MTerm = (Row, usize, Row);

/// Check layer `l`'s attention against its placed operations and advance `state`: derive the
/// normal form from the weights, build the expected one from the operations, compare.
pub fn check_attention(
    ctx: &Ctx,
    l: Layer,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    ops: &[PlacedOp],
    state: &mut [RowState],
) -> Result<Option<PrepInfo>, CertifyError> {
    let step = Step::new(ctx, l, Part::Attention, ops);
    require_exact_form(&step, ac)?;
    let keys = (0..ac.heads)
        .map(|h| head_pattern(&step, ac, aw.bias.as_ref(), h))
        .collect::<Result<Vec<PatKey>, CertifyError>>()?;
    check_attention_forms(&step, ac, aw, keys, &Coeffs::new(), false, state)
}

/// The attention normal form, given every head's attention matrix (`keys`; from its bias
/// pattern here, from its position-coded scores for the `paper` target): the operands hold
/// what the operations read, the form derived from the weights equals the operations', and
/// `state` is advanced. `o_bias` is the expected `attn.o.bias` (the paper target's division
/// zeroes its bypass rows there); `clear_payload` adds the paper target's payload clear
/// (M_self[p, p] = −1 on both payload rows).
pub fn check_attention_forms(
    step: &Step,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    keys: Vec<PatKey>,
    o_bias: &Coeffs<Row>,
    clear_payload: bool,
    state: &mut [RowState],
) -> Result<Option<PrepInfo>, CertifyError> {
    let (ctx, l, ops) = (step.ctx, step.layer, step.ops);
    check_disjoint(ctx, l, step.part, ops)?;
    for po in ops {
        match &ctx.p.ops[po.op].kind {
            OpKind::Mov { src, .. } => check_operand(ctx, l, step.part, po.op, *src, state)?,
            OpKind::Div { den, .. } => check_operand(ctx, l, step.part, po.op, *den, state)?,
            _ => unreachable!("checked by check_placements"),
        }
    }
    let mut pats = Patterns::default();
    let head_key: Vec<usize> = keys.into_iter().map(|k| pats.intern(k)).collect();
    let derived = derive(step, ac, aw, &head_key, o_bias, state)?;
    let mut expected = expected(step, &derived, &mut pats)?;
    if clear_payload {
        let sk = pats.intern(self_key(ctx.cols));
        if let Some(pl) = ctx.layout.div_payload {
            for p in pl {
                add(&mut expected.form, (p, sk, p), &Dy::int(-1));
            }
        }
    }
    compare_forms(step, &derived, &expected, &pats, &head_key, state)?;
    advance(ctx, ops, state);
    if clear_payload {
        if let Some(pl) = ctx.layout.div_payload {
            for p in pl {
                state[p] = RowState {
                    content: Content::Zero,
                    err: 0.0,
                };
            }
        }
    }
    Ok(expected.prep)
}

/// Only fixed patterns have an exact normal form: no Q/K projections, no momentum.
fn require_exact_form(step: &Step, ac: &AttnConfig) -> Result<(), CertifyError> {
    let whole_layer = |msg: &str| {
        step.ctx
            .op_err(step.layer, Part::Layer, step.first_op(), msg.into())
    };
    if ac.qk {
        return Err(whole_layer(
            "Q/K attention — no exact normal form; use the paper target's bounds",
        ));
    }
    if ac.momentum.is_some() {
        return Err(whole_layer("momentum attention — no exact normal form"));
    }
    Ok(())
}

/// Head `h`'s attention matrix, from its additive bias (none: every score 0). Scores of 0 and
/// −∞ only: query t then attends uniformly the keys s ≤ t with score 0 (and the null key when
/// `zero_attn` and its score is 0); at least one key must be allowed.
fn head_pattern(
    step: &Step,
    ac: &AttnConfig,
    bias: Option<&Stored>,
    h: usize,
) -> Result<PatKey, CertifyError> {
    let cols = step.ctx.cols;
    let mut key = Vec::with_capacity(cols);
    for t in 0..cols {
        let score = |s: usize| -> Result<bool, CertifyError> {
            let v = bias.map_or(0.0, |b| b.data[(h * cols + t) * (cols + 1) + s]);
            if v == 0.0 {
                Ok(true)
            } else if v == f64::NEG_INFINITY {
                Ok(false)
            } else {
                let name = &bias.expect("a non-zero score comes from a bias").name;
                Err(step.err(
                    step.first_op(),
                    format!(
                        "{name}[{h}, {t}, {s}] is {v}: only 0 and −inf give an exact (uniform) \
                         softmax"
                    ),
                ))
            }
        };
        let mut real = Vec::new();
        for s in 0..=t {
            if score(s)? {
                real.push(s as u32);
            }
        }
        let null = ac.zero_attn && score(cols)?;
        let count = real.len() as u32 + null as u32;
        if count == 0 {
            return Err(step.err(
                step.first_op(),
                format!(
                    "head {h}, query column {t}: every allowed key has score −inf (the softmax \
                     is undefined)"
                ),
            ));
        }
        key.push(if real.is_empty() {
            (vec![], 0)
        } else {
            (real, count)
        });
    }
    Ok(key)
}

/// How a message names row `r` of this layer: what the step writes there, else what it holds.
fn row_name(step: &Step, state: &[RowState], r: Row) -> String {
    step.written_name(r)
        .unwrap_or_else(|| step.ctx.content_name(r, &state[r].content))
}

/// The normal form the weights compute: b_O = 0 and W_O^h b_V^h = 0 checked (no constant
/// term), then M_P[r, c] = Σ_{h : p_h = P} Σ_{j ∈ h} W_O[r, j] W_V[j, c].
fn derive(
    step: &Step,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    head_key: &[usize],
    o_bias: &Coeffs<Row>,
    state: &[RowState],
) -> Result<Coeffs<MTerm>, CertifyError> {
    let none = Coeffs::new();
    let ob: Coeffs<Row> =
        aw.o.bias
            .exact_vec()?
            .into_iter()
            .enumerate()
            .map(|(r, v)| (Row(r), v))
            .collect();
    compare(
        &ob,
        o_bias,
        |_| (),
        |m, _| {
            let r = m.term;
            let msg = format!(
                "{}[{r}] is {}, expected {} ({})",
                aw.o.bias.name,
                m.got.to_f64(),
                m.want,
                row_name(step, state, r)
            );
            step.row_err(r, msg)
        },
    )?;
    let vrows = aw.v.weight.sparse_rows()?;
    let ocols = aw.o.weight.sparse_cols()?;
    let vbias = aw.v.bias.exact_vec()?;
    let hd = ac.head_dim;
    for h in 0..ac.heads {
        let mut constant: Coeffs<Row> = Coeffs::new();
        for j in (h * hd..(h + 1) * hd).filter(|&j| !vbias[j].is_zero()) {
            for (r, o) in &ocols[j] {
                add(&mut constant, Row(*r), &o.mul(&vbias[j]));
            }
        }
        compare(
            &constant,
            &none,
            |_| (),
            |m, _| {
                let msg = format!(
                    "head {h} adds the constant W_O·b_V = {} to {} (value bias not cancelled)",
                    m.got,
                    row_name(step, state, m.term)
                );
                step.row_err(m.term, msg)
            },
        )?;
    }
    let mut m = Coeffs::new();
    for (h, &kid) in head_key.iter().enumerate() {
        for j in h * hd..(h + 1) * hd {
            for (r, o) in &ocols[j] {
                for (c, v) in &vrows[j] {
                    add(&mut m, (Row(*r), kid, Row(*c)), &o.mul(v));
                }
            }
        }
    }
    Ok(m)
}

/// The normal form the step's operations call for, with what a division's attention half
/// leaves for its MLP half.
struct Expected {
    form: Coeffs<MTerm>,
    /// The pattern each row a `mov` writes is expected to read through (for messages).
    row_key: HashMap<Row, usize>,
    prep: Option<PrepInfo>,
}

/// The expected normal form: per operation, `mov dst <- src from Pat` adds M_Pat[dst_e, src_e]
/// = 1 and M_self[dst_e, dst_e] = −1; a division's attention half is [`expect_div_prep`].
fn expected(
    step: &Step,
    derived: &Coeffs<MTerm>,
    pats: &mut Patterns,
) -> Result<Expected, CertifyError> {
    let (ctx, cols) = (step.ctx, step.ctx.cols);
    let sk = pats.intern(self_key(cols));
    pats.names[sk] = Some("self".into());
    let mut out = Expected {
        form: Coeffs::new(),
        row_key: HashMap::new(),
        prep: None,
    };
    for po in step.ops {
        match &ctx.p.ops[po.op].kind {
            OpKind::Mov { dst, src, pattern } => {
                let pk = pats.intern(pattern_key(*pattern, cols));
                pats.names[pk].get_or_insert_with(|| pattern.to_string());
                for e in 0..ctx.p.reg(*dst).shape.size() {
                    let (rd, rs) = (ctx.row(*dst, e), ctx.row(*src, e));
                    add(&mut out.form, (rd, pk, rs), &Dy::int(1));
                    add(&mut out.form, (rd, sk, rd), &Dy::int(-1));
                    out.row_key.insert(rd, pk);
                }
            }
            OpKind::Div { dst, den, .. } => {
                debug_assert_eq!(po.part, OpPart::DivPrep);
                let scale = expect_div_prep(step, po.op, *dst, *den, sk, derived, &mut out.form)?;
                out.prep = Some(PrepInfo { op: po.op, scale });
            }
            _ => unreachable!("checked by check_placements"),
        }
    }
    Ok(out)
}

/// The attention half of `div dst <- num / |den|` (operation `k`, self pattern `sk`): payload
/// rows p1, p2 get +P·den and −P·den (overwriting), dst is cleared: M_self[p1, den] = P,
/// M_self[p1, p1] = −1, M_self[p2, den] = −P, M_self[p2, p2] = −1, M_self[dst_e, dst_e] = −1.
/// P is read from the weights (it must be positive and be layout.json's payload scale); the
/// rest of the form is fixed by it. Returns P.
fn expect_div_prep(
    step: &Step,
    k: OpId,
    dst: RegId,
    den: RegId,
    sk: usize,
    derived: &Coeffs<MTerm>,
    form: &mut Coeffs<MTerm>,
) -> Result<Dy, CertifyError> {
    let ctx = step.ctx;
    let pl = ctx.layout.div_payload.expect("checked by check_disjoint");
    let rden = ctx.row(den, 0);
    let scale = derived.get(&(pl[0], sk, rden)).cloned().unwrap_or_default();
    if !scale.is_positive() {
        return Err(step.err(
            Some(k),
            format!(
                "payload row {} gets {scale}·den; the LayerNorm division needs a payload scale \
                 P > 0",
                pl[0]
            ),
        ));
    }
    let recorded = |c: &DivConstants| Dy::from_f64(c.payload_scale);
    check_layout_constant(step, k, "payload scale", recorded, &scale)?;
    add(form, (pl[0], sk, rden), &scale);
    add(form, (pl[0], sk, pl[0]), &Dy::int(-1));
    add(form, (pl[1], sk, rden), &scale.neg());
    add(form, (pl[1], sk, pl[1]), &Dy::int(-1));
    for rd in ctx.rows(dst) {
        add(form, (rd, sk, rd), &Dy::int(-1));
    }
    Ok(scale)
}

/// Compare coefficient by coefficient: rows an operation of this layer writes first (the most
/// specific message), then the rest. The message names the row, what it reads, the pattern
/// (for a pattern no operation uses: where it differs from the expected one) and the
/// coefficients.
fn compare_forms(
    step: &Step,
    derived: &Coeffs<MTerm>,
    expected: &Expected,
    pats: &Patterns,
    head_key: &[usize],
    state: &[RowState],
) -> Result<(), CertifyError> {
    let rank = |t: &MTerm| !step.writer.contains_key(&t.0);
    compare(derived, &expected.form, rank, |m, n| {
        let (r, kid, c) = m.term;
        let heads_of: Vec<usize> = (0..head_key.len())
            .filter(|&h| head_key[h] == kid)
            .collect();
        let pname = match &pats.names[kid] {
            Some(n) => format!("pattern {n}"),
            None => format!("the attention pattern of head(s) {heads_of:?}"),
        };
        let mut msg = format!(
            "{} reads {} through {pname} with coefficient {}, expected {}",
            row_name(step, state, r),
            step.ctx.content_name(c, &state[c].content),
            m.got,
            m.want
        );
        if pats.names[kid].is_none() {
            msg.push_str(" — a pattern no operation of this layer uses");
            if let Some(&ek) = expected.row_key.get(&r) {
                let (got, want) = (&pats.keys[kid], &pats.keys[ek]);
                if let Some(t) = (0..step.ctx.cols).find(|&t| got[t] != want[t]) {
                    msg.push_str(&format!(
                        "; at query column {t} it attends {}, pattern {} attends {}",
                        describe_row(&got[t]),
                        pats.names[ek].as_deref().unwrap_or("?"),
                        describe_row(&want[t])
                    ));
                }
            }
        }
        if n > 1 {
            msg.push_str(&format!(" ({n} coefficients differ in this layer)"));
        }
        step.row_err(r, msg)
    })
}

/// Advance the symbolic state: a `mov` writes its destination (a mean of values each within ε
/// of the program's is within ε; the null key gives exactly 0); a division's attention half
/// clears its destination and fills the payload rows.
fn advance(ctx: &Ctx, ops: &[PlacedOp], state: &mut [RowState]) {
    let before = state.to_vec();
    for po in ops {
        let k = po.op;
        match &ctx.p.ops[k].kind {
            OpKind::Mov { dst, src, .. } => {
                for e in 0..ctx.p.reg(*dst).shape.size() {
                    state[ctx.row(*dst, e)] = RowState {
                        content: Content::Val {
                            reg: *dst,
                            elem: e,
                            ver: Some(k),
                        },
                        err: before[ctx.row(*src, e)].err,
                    };
                }
            }
            OpKind::Div { dst, .. } => {
                for rd in ctx.rows(*dst) {
                    state[rd] = RowState {
                        content: Content::Cleared(k),
                        err: 0.0,
                    };
                }
                for r in ctx.layout.div_payload.expect("checked by check_disjoint") {
                    state[r] = RowState {
                        content: Content::Payload(k),
                        err: 0.0,
                    };
                }
            }
            _ => unreachable!("checked by check_placements"),
        }
    }
}
