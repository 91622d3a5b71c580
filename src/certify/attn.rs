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

use super::exact::Dy;
use super::{check_disjoint, check_operand, writer_of, CertifyError, Content, Ctx, Part, RowState};
use crate::ir::{OpKind, Pattern};
use crate::layout::{OpPart, PlacedOp};
use crate::model::config::AttnConfig;
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
    pub op: usize,
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

/// Check layer `l`'s attention against its placed operations and advance `state`.
pub fn check_attention(
    ctx: &Ctx,
    l: usize,
    ac: &AttnConfig,
    ops: &[PlacedOp],
    state: &mut [RowState],
) -> Result<Option<PrepInfo>, CertifyError> {
    let p = ctx.p;
    let w = ctx.width;
    let part = Part::Attention;
    let first_op = ops.first().map(|o| o.op);
    if ac.qk {
        return Err(ctx.op_err(
            l,
            Part::Layer,
            first_op,
            "Q/K attention — no exact normal form; use the paper target's bounds".into(),
        ));
    }
    if ac.momentum.is_some() {
        return Err(ctx.op_err(
            l,
            Part::Layer,
            first_op,
            "momentum attention — no exact normal form".into(),
        ));
    }
    check_disjoint(ctx, l, part, ops)?;
    for po in ops {
        match &p.ops[po.op].kind {
            OpKind::Mov { src, .. } => check_operand(ctx, l, part, po.op, *src, state)?,
            OpKind::Div { den, .. } => check_operand(ctx, l, part, po.op, *den, state)?,
            _ => unreachable!("checked by check_placements"),
        }
    }
    let (heads, hd) = (ac.heads, ac.head_dim);
    let inner = heads * hd;
    let pre = format!("layers.{l}.attn");
    let vw = ctx.tensor(&format!("{pre}.v.weight"), &[inner, w])?;
    let vb = ctx.tensor(&format!("{pre}.v.bias"), &[inner])?;
    let ow = ctx.tensor(&format!("{pre}.o.weight"), &[w, inner])?;
    let ob = ctx.tensor(&format!("{pre}.o.bias"), &[w])?;
    let cols = ctx.cols;
    let writer = writer_of(ctx, ops);
    let row_name = |r: usize| -> String {
        match writer.get(&r) {
            Some(&k) => {
                let dst = p.ops[k].kind.dst();
                let s = ctx.start[dst];
                if r >= s && r < s + p.reg(dst).shape.size() {
                    format!("row {r} ({})", ctx.elem_name(dst, r - s))
                } else {
                    format!("row {r} (division payload)")
                }
            }
            None => ctx.content_name(r, &state[r].content),
        }
    };
    let fail = |r: usize, msg: String| ctx.op_err(l, part, writer.get(&r).copied(), msg);

    // Attention matrix of every head.
    let mut keys: Vec<PatKey> = Vec::new();
    let mut key_id: HashMap<PatKey, usize> = HashMap::new();
    let mut key_name: Vec<Option<String>> = Vec::new();
    let mut intern = |k: PatKey, keys: &mut Vec<PatKey>, names: &mut Vec<Option<String>>| {
        *key_id.entry(k.clone()).or_insert_with(|| {
            keys.push(k);
            names.push(None);
            keys.len() - 1
        })
    };
    let bias = if ac.bias {
        Some(ctx.tensor(&format!("{pre}.bias"), &[heads, cols, cols + 1])?)
    } else {
        None
    };
    let mut head_key = Vec::with_capacity(heads);
    for h in 0..heads {
        let mut key = Vec::with_capacity(cols);
        for t in 0..cols {
            let score = |s: usize| -> Result<bool, CertifyError> {
                let v = match bias {
                    Some(b) => b.data[(h * cols + t) * (cols + 1) + s],
                    None => 0.0,
                };
                if v == 0.0 {
                    Ok(true)
                } else if v == f64::NEG_INFINITY {
                    Ok(false)
                } else {
                    Err(ctx.op_err(
                        l,
                        part,
                        first_op,
                        format!(
                            "{pre}.bias[{h}, {t}, {s}] is {v}: only 0 and −inf give an exact \
                             (uniform) softmax"
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
                return Err(ctx.op_err(
                    l,
                    part,
                    first_op,
                    format!(
                        "head {h}, query column {t}: every allowed key has score −inf (the \
                         softmax is undefined)"
                    ),
                ));
            }
            key.push(if real.is_empty() {
                (vec![], 0)
            } else {
                (real, count)
            });
        }
        head_key.push(intern(key, &mut keys, &mut key_name));
    }

    // b_O = 0.
    for r in 0..w {
        if ob.data[r] != 0.0 {
            return Err(fail(
                r,
                format!(
                    "{pre}.o.bias[{r}] is {}, expected 0 ({})",
                    ob.data[r],
                    row_name(r)
                ),
            ));
        }
    }
    // Sparse W_V rows, W_O columns (exact).
    let vrows = super::sparse_rows(&format!("{pre}.v.weight"), vw)?;
    let orows = super::sparse_rows(&format!("{pre}.o.weight"), ow)?;
    let mut ocols: Vec<Vec<(usize, Dy)>> = vec![Vec::new(); inner];
    for (r, row) in orows.into_iter().enumerate() {
        for (j, v) in row {
            ocols[j].push((r, v));
        }
    }
    let vbias = super::exact_vec(&format!("{pre}.v.bias"), vb)?;
    // W_O^h b_V^h = 0 for every head.
    for h in 0..heads {
        let mut acc: HashMap<usize, Dy> = HashMap::new();
        for j in h * hd..(h + 1) * hd {
            if vbias[j].is_zero() {
                continue;
            }
            for (r, o) in &ocols[j] {
                acc.entry(*r).or_default().add_assign(&o.mul(&vbias[j]));
            }
        }
        let mut bad: Vec<(usize, Dy)> = acc.into_iter().filter(|(_, v)| !v.is_zero()).collect();
        bad.sort_by_key(|x| x.0);
        if let Some((r, v)) = bad.first() {
            return Err(fail(
                *r,
                format!(
                    "head {h} adds the constant W_O·b_V = {v} to {} (value bias not cancelled)",
                    row_name(*r)
                ),
            ));
        }
    }
    // Derived M_P.
    let mut derived: Vec<HashMap<(usize, usize), Dy>> = vec![HashMap::new(); keys.len()];
    for h in 0..heads {
        let m = &mut derived[head_key[h]];
        for j in h * hd..(h + 1) * hd {
            for (r, o) in &ocols[j] {
                for (c, v) in &vrows[j] {
                    m.entry((*r, *c)).or_default().add_assign(&o.mul(v));
                }
            }
        }
    }

    // Expected M_P.
    let sk = intern(self_key(cols), &mut keys, &mut key_name);
    key_name[sk] = Some("self".into());
    let mut expected: Vec<HashMap<(usize, usize), Dy>> = Vec::new();
    let add =
        |expected: &mut Vec<HashMap<(usize, usize), Dy>>, k: usize, r: usize, c: usize, v: Dy| {
            if expected.len() <= k {
                expected.resize(k + 1, HashMap::new());
            }
            expected[k].entry((r, c)).or_default().add_assign(&v);
        };
    let mut prep = None;
    // The pattern each written row is expected to read through (for messages).
    let mut row_key: HashMap<usize, usize> = HashMap::new();
    for po in ops {
        let k = po.op;
        match &p.ops[k].kind {
            OpKind::Mov { dst, src, pattern } => {
                let pk = intern(pattern_key(*pattern, cols), &mut keys, &mut key_name);
                key_name[pk].get_or_insert_with(|| pattern.to_string());
                for e in 0..p.reg(*dst).shape.size() {
                    let (rd, rs) = (ctx.row(*dst, e), ctx.row(*src, e));
                    add(&mut expected, pk, rd, rs, Dy::int(1));
                    add(&mut expected, sk, rd, rd, Dy::int(-1));
                    row_key.insert(rd, pk);
                }
            }
            OpKind::Div { dst, den, .. } => {
                debug_assert_eq!(po.part, OpPart::DivPrep);
                let pl = ctx.layout.div_payload.expect("checked by check_disjoint");
                let rden = ctx.row(*den, 0);
                // P is read from the weights; the rest of the expected form is fixed by it.
                let scale = derived
                    .get(sk)
                    .and_then(|m| m.get(&(pl[0], rden)))
                    .cloned()
                    .unwrap_or_default();
                if !scale.is_positive() {
                    return Err(ctx.op_err(
                        l,
                        part,
                        Some(k),
                        format!(
                            "payload row {} gets {scale}·den; the LayerNorm division needs a \
                             payload scale P > 0",
                            pl[0]
                        ),
                    ));
                }
                let dc = ctx.layout.div_constants.iter().find(|c| c.layer == l);
                match dc.map(|c| Dy::from_f64(c.payload_scale)) {
                    Some(Some(v)) if v == scale => {}
                    other => {
                        return Err(ctx.op_err(
                            l,
                            part,
                            Some(k),
                            format!(
                                "layout.json div_constants give payload scale {:?} for this \
                                 layer; the weights have {scale}",
                                other.flatten().map(|v| v.to_string())
                            ),
                        ))
                    }
                }
                add(&mut expected, sk, pl[0], rden, scale.clone());
                add(&mut expected, sk, pl[0], pl[0], Dy::int(-1));
                add(&mut expected, sk, pl[1], rden, scale.neg());
                add(&mut expected, sk, pl[1], pl[1], Dy::int(-1));
                for e in 0..p.reg(*dst).shape.size() {
                    let rd = ctx.row(*dst, e);
                    add(&mut expected, sk, rd, rd, Dy::int(-1));
                }
                prep = Some(PrepInfo { op: k, scale });
            }
            _ => unreachable!("checked by check_placements"),
        }
    }
    expected.resize(keys.len(), HashMap::new());
    derived.resize(keys.len(), HashMap::new());

    // Compare coefficient by coefficient.
    let mut bad: Vec<(usize, usize, usize, Dy, Dy)> = Vec::new();
    for kid in 0..keys.len() {
        let (d, e) = (&derived[kid], &expected[kid]);
        for (rc, dv) in d {
            let ev = e.get(rc).cloned().unwrap_or_default();
            if *dv != ev {
                bad.push((rc.0, kid, rc.1, dv.clone(), ev));
            }
        }
        for (rc, ev) in e {
            if !d.contains_key(rc) && !ev.is_zero() {
                bad.push((rc.0, kid, rc.1, Dy::zero(), ev.clone()));
            }
        }
    }
    // Rows an operation of this layer writes first (the most specific message), then the rest.
    bad.sort_by_key(|a| (!writer.contains_key(&a.0), a.0, a.1, a.2));
    if let Some((r, kid, c, got, want)) = bad.first() {
        let heads_of: Vec<usize> = (0..heads).filter(|&h| head_key[h] == *kid).collect();
        let pname = match &key_name[*kid] {
            Some(n) => format!("pattern {n}"),
            None => format!("the attention pattern of head(s) {heads_of:?}"),
        };
        let mut msg = format!(
            "{} reads {} through {pname} with coefficient {got}, expected {want}",
            row_name(*r),
            ctx.content_name(*c, &state[*c].content),
        );
        if key_name[*kid].is_none() {
            msg.push_str(" — a pattern no operation of this layer uses");
            if let Some(&ek) = row_key.get(r) {
                if let Some(t) = (0..cols).find(|&t| keys[*kid][t] != keys[ek][t]) {
                    msg.push_str(&format!(
                        "; at query column {t} it attends {}, pattern {} attends {}",
                        describe_row(&keys[*kid][t]),
                        key_name[ek].as_deref().unwrap_or("?"),
                        describe_row(&keys[ek][t])
                    ));
                }
            }
        }
        if bad.len() > 1 {
            msg.push_str(&format!(
                " ({} coefficients differ in this layer)",
                bad.len()
            ));
        }
        return Err(fail(*r, msg));
    }

    // Advance the symbolic state.
    let before = state.to_vec();
    for po in ops {
        let k = po.op;
        match &p.ops[k].kind {
            OpKind::Mov { dst, src, .. } => {
                for e in 0..p.reg(*dst).shape.size() {
                    // A mean of values each within ε of the program's is within ε; the null
                    // key gives exactly 0.
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
                for e in 0..p.reg(*dst).shape.size() {
                    state[ctx.row(*dst, e)] = RowState {
                        content: Content::Cleared(k),
                        err: 0.0,
                    };
                }
                let pl = ctx.layout.div_payload.expect("checked");
                for r in pl {
                    state[r] = RowState {
                        content: Content::Payload(k),
                        err: 0.0,
                    };
                }
            }
            _ => unreachable!(),
        }
    }
    Ok(prep)
}
