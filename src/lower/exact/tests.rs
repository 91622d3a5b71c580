//! The constructions one at a time: each builds its heads or units for hand-picked rows, and the
//! tests read them back as tensors or run them on a hidden column.

use super::*;
use crate::ir::Location;
use crate::model::schema::Linear;

const NEG: f64 = f64::NEG_INFINITY;

/// Zero attention tensors for `heads` over a `width`-row hidden state and `t_max` columns.
fn attention_zeros(heads: &Heads, width: usize, t_max: usize) -> Attention<RawTensor> {
    let inner = heads.count() * heads.head_dim();
    let linear = |out: usize, inp: usize| Linear {
        weight: RawTensor::zeros(&[out, inp]),
        bias: RawTensor::zeros(&[out]),
    };
    Attention {
        q: None,
        k: None,
        v: linear(inner, width),
        o: linear(width, inner),
        bias: Some(RawTensor::zeros(&[heads.count(), t_max, t_max + 1])),
        momentum_logit: None,
    }
}

/// The bias row of head `h` for query `t`: key columns 0..t_max, then the null key.
fn bias_row(a: &Attention<RawTensor>, h: usize, t: usize) -> Vec<f64> {
    let b = a.bias.as_ref().unwrap();
    let (t_max, keys) = (b.shape[1], b.shape[2]);
    let start = (h * t_max + t) * keys;
    b.data[start..start + keys].to_vec()
}

/// Non-zero entries of row `i` of a matrix, as (column, value).
fn row_entries(m: &RawTensor, i: usize) -> Vec<(usize, f64)> {
    (0..m.shape[1])
        .map(|j| (j, m.at2(i, j)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Non-zero entries of column `j` of a matrix, as (row, value).
fn col_entries(m: &RawTensor, j: usize) -> Vec<(usize, f64)> {
    (0..m.shape[0])
        .map(|i| (i, m.at2(i, j)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// `h + Σ_u (gate_u·m + b_g)(up_u·m + b_u)·e_{down_u}` with the MLP input `m`.
fn apply_units(units: &[Unit], h: &[f64], m: &[f64]) -> Vec<f64> {
    let form = |f: &Form| f.0.iter().map(|(&r, &c)| c * m[r.index()]).sum::<f64>();
    let mut out = h.to_vec();
    for u in units {
        out[u.down.index()] += (form(&u.gate) + u.gate_bias) * (form(&u.up) + u.up_bias);
    }
    out
}

#[test]
fn mov_prev_reads_exactly_the_previous_column_and_overwrites_dst() {
    let (width, t_max) = (8, 4);
    let mut heads = Heads::default();
    // A 2-element register at rows 3..5 moved into rows 5..7.
    assert_eq!(mov(&mut heads, Pattern::Prev, Row(3), Row(5), 2), 0);
    assert_eq!(
        (heads.count(), heads.head_dim(), heads.self_index()),
        (2, 2, 1)
    );
    let mut a = attention_zeros(&heads, width, t_max);
    attention_weights(&heads, t_max, &mut a).unwrap();
    for t in 0..t_max {
        let row = bias_row(&a, 0, t);
        let admitted: Vec<usize> = (0..=t_max).filter(|&s| row[s] == 0.0).collect();
        // Column t−1, or the null key (value 0) at column 0.
        let want = if t == 0 { vec![t_max] } else { vec![t - 1] };
        assert_eq!(admitted, want, "prev head, query {t}");
        assert!(row.iter().all(|&v| v == 0.0 || v == NEG), "{row:?}");
        // The self head admits its own column only (no null key).
        let own = bias_row(&a, 1, t);
        let admitted: Vec<usize> = (0..=t_max).filter(|&s| own[s] == 0.0).collect();
        assert_eq!(admitted, vec![t], "self head, query {t}");
    }
    // Prev head (inner 0..2): value reads src row 3+c, output adds into dst row 5+c.
    for c in 0..2 {
        assert_eq!(row_entries(&a.v.weight, c), vec![(3 + c, 1.0)]);
        assert_eq!(col_entries(&a.o.weight, c), vec![(5 + c, 1.0)]);
        // Self head (inner 2..4): −h[dst] into dst.
        assert_eq!(row_entries(&a.v.weight, 2 + c), vec![(5 + c, -1.0)]);
        assert_eq!(col_entries(&a.o.weight, 2 + c), vec![(5 + c, 1.0)]);
    }
    assert!(a
        .v
        .bias
        .data
        .iter()
        .chain(&a.o.bias.data)
        .all(|&v| v == 0.0));
}

#[test]
fn mov_shares_one_head_per_pattern_and_pads_smaller_heads() {
    let mut heads = Heads::default();
    assert_eq!(mov(&mut heads, Pattern::Col(2), Row(1), Row(4), 1), 0);
    assert_eq!(mov(&mut heads, Pattern::Prev, Row(2), Row(5), 3), 1);
    assert_eq!(mov(&mut heads, Pattern::Col(2), Row(3), Row(8), 1), 0);
    // col(2) has 2 components, prev 3, the self head one per moved element: 5.
    assert_eq!((heads.count(), heads.head_dim()), (3, 5));
    let t_max = 5;
    let mut a = attention_zeros(&heads, 9, t_max);
    attention_weights(&heads, t_max, &mut a).unwrap();
    // col(2): queries before column 2 get the null key, later ones column 2.
    for t in 0..t_max {
        let row = bias_row(&a, 0, t);
        let admitted: Vec<usize> = (0..=t_max).filter(|&s| row[s] == 0.0).collect();
        assert_eq!(admitted, if t < 2 { vec![t_max] } else { vec![2] });
    }
    // The second col(2) move is component 1 of head 0; head 1's unused components stay zero.
    assert_eq!(row_entries(&a.v.weight, 1), vec![(3, 1.0)]);
    assert_eq!(col_entries(&a.o.weight, 1), vec![(8, 1.0)]);
    for c in 3..5 {
        assert!(row_entries(&a.v.weight, 5 + c).is_empty());
        assert!(col_entries(&a.o.weight, 5 + c).is_empty());
    }
}

#[test]
fn mul_units_compute_the_product_and_overwrite_dst() {
    // A: 2×1 register at rows 0..2; B: a 2×1 register at rows 2..4 read transposed (1×2);
    // dst: 2×2 at rows 4..8, holding stale values.
    let a = MulOperand {
        row: Row(0),
        reg: Shape { rows: 2, cols: 1 },
        transposed: false,
    };
    let b = MulOperand {
        row: Row(2),
        reg: Shape { rows: 2, cols: 1 },
        transposed: true,
    };
    let mut units = Vec::new();
    mul(&mut units, a, b, Row(4));
    // Per dst element: one term unit (inner dimension 1) and one overwrite unit.
    assert_eq!(units.len(), 8);
    let h = [2.0, -3.0, 5.0, 7.0, 11.0, 13.0, 17.0, 19.0];
    let out = apply_units(&units, &h, &h);
    assert_eq!(&out[..4], &h[..4], "operands untouched");
    assert_eq!(&out[4..], &[10.0, 14.0, -15.0, -21.0], "dst = A·Bᵀ");
    // The overwrite unit of dst[1,1]: gate −e_dst, up bias 1.
    let ow = &units[7];
    assert_eq!(ow.gate.0.iter().collect::<Vec<_>>(), vec![(&Row(7), &-1.0)]);
    assert_eq!((ow.up.0.len(), ow.up_bias, ow.down), (0, 1.0, Row(7)));
}

#[test]
fn aff_gate_row_has_the_coefficients_and_minus_one_on_dst() {
    // dst[0] ← 2·h[1] + 3·h[4] + 1·h[1] + 0.5 in place (dst is row 4); dst[1] ← −1.
    let gates = vec![vec![(Row(1), 2.0), (Row(4), 3.0), (Row(1), 1.0)], vec![]];
    let mut units = Vec::new();
    aff(&mut units, Row(4), &[0.5, -1.0], &gates);
    assert_eq!(units.len(), 4);
    let mut w = Mlp {
        gate: Some(Linear {
            weight: RawTensor::zeros(&[4, 6]),
            bias: RawTensor::zeros(&[4]),
        }),
        up: Linear {
            weight: RawTensor::zeros(&[4, 6]),
            bias: RawTensor::zeros(&[4]),
        },
        down: Linear {
            weight: RawTensor::zeros(&[6, 4]),
            bias: RawTensor::zeros(&[6]),
        },
    };
    mlp_weights(&units, &mut w).unwrap();
    let gate = w.gate.as_ref().unwrap();
    // Unit 0 overwrites: −1 on dst. Unit 1 maps: same-row coefficients merged (2 + 1 on row 1),
    // the dst coefficient 3 kept apart from the −1 (not merged into C − 1 = 2).
    assert_eq!(row_entries(&gate.weight, 0), vec![(4, -1.0)]);
    assert_eq!(row_entries(&gate.weight, 1), vec![(1, 3.0), (4, 3.0)]);
    assert_eq!(gate.bias.data, vec![0.0, 0.5, 0.0, -1.0]);
    assert_eq!(row_entries(&gate.weight, 2), vec![(5, -1.0)]);
    assert!(row_entries(&gate.weight, 3).is_empty());
    assert!(w.up.weight.data.iter().all(|&v| v == 0.0));
    assert_eq!(w.up.bias.data, vec![1.0; 4]);
    for (u, dst) in [4, 4, 5, 5].into_iter().enumerate() {
        assert_eq!(col_entries(&w.down.weight, u), vec![(dst, 1.0)]);
    }
    let h = [0.0, 2.0, 0.0, 0.0, 7.0, 9.0];
    let out = apply_units(&units, &h, &h);
    assert_eq!(
        out,
        vec![0.0, 2.0, 0.0, 0.0, 3.0 * 2.0 + 3.0 * 7.0 + 0.5, -1.0]
    );
}

/// Rows of the division tests: width 8, den at 1, num (2 elements) at 2..4, dst at 4..6, the
/// payload at 6 and 7, the zero row 0.
const DEN: Row = Row(1);
const NUM: Row = Row(2);
const DST: Row = Row(4);
const PAYLOAD: [Row; 2] = [Row(6), Row(7)];
const ZERO: Row = Row(0);

/// A division's constants for width 8 in f64, with payload scale `pp`.
fn div_report(pp: f64) -> DivReport {
    let (gain, gain_up, _) = division_gain(pp, 8.0, DType::F64);
    DivReport {
        op: OpId(0),
        layer: Layer(0),
        text: "div q <- a / d".into(),
        at: Location {
            file: "t.icl".into(),
            span: Default::default(),
        },
        payload_scale: pp,
        gain,
        gain_up,
        r_max: 0.0,
        den_abs: [1.0, 1.0],
        relative_error: 0.0,
        den: "d".into(),
    }
}

#[test]
fn div_prep_writes_the_payload_and_clears_dst() {
    let pp = 1024.0;
    let mut self_head = Vec::new();
    div_prep(&mut self_head, DEN, PAYLOAD, pp, DST, 2);
    // The self head reads its own column: h + Σ_c (v_c·h)·e_{out_c}, with stale payload and dst.
    let h = [0.0, -2.5, 3.0, 4.0, 5.0, 6.0, 7.0, -8.0];
    let mut out = h.to_vec();
    for c in &self_head {
        out[c.out.index()] += c.v.0.iter().map(|(&r, &k)| k * h[r.index()]).sum::<f64>();
    }
    assert_eq!(out, vec![0.0, -2.5, 3.0, 4.0, 0.0, 0.0, -2560.0, 2560.0]);
}

#[test]
fn div_apply_divides_through_the_layer_norm() {
    let pp = (1u64 << 20) as f64;
    let dv = div_report(pp);
    let mut units = Vec::new();
    div_apply(&mut units, NUM, ZERO, DST, 2, &dv);
    assert_eq!(units.len(), 2);
    assert_eq!(
        units[1]
            .gate
            .0
            .iter()
            .map(|(&r, &c)| (r, c))
            .collect::<Vec<_>>(),
        vec![(ZERO, -dv.gain), (NUM + 1, dv.gain)]
    );
    // The column after div_prep: den = −2.5, num = [3, −4], dst cleared, payload ±P·den.
    let den = -2.5;
    let h = [0.0, den, 3.0, -4.0, 0.0, 0.0, pp * den, -pp * den];
    // LayerNorm with eps 0, weight 1, bias 0.
    let mean = h.iter().sum::<f64>() / 8.0;
    let var = h.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 8.0;
    let m: Vec<f64> = h.iter().map(|v| (v - mean) / var.sqrt()).collect();
    let out = apply_units(&units, &h, &m);
    // R = Σ_{r∉payload} h_r² − Lμ² ≤ 31.25, so the relative error is below 31.25/(4P²den²) + δ.
    for (e, num) in [3.0, -4.0].into_iter().enumerate() {
        let want = num / den.abs();
        assert!(
            ((out[(DST + e).index()] - want) / want).abs() < 1e-11,
            "{} vs {want}",
            out[(DST + e).index()]
        );
    }
}

#[test]
fn layer_config_has_the_parts_its_ops_use() {
    let dv = div_report(1.0);
    let mut plan = BlockPlan::default();
    assert_eq!(
        layer_config(&plan),
        LayerConfig {
            attn_norm: None,
            attn: None,
            norm: None,
            mlp: None
        }
    );
    mov(&mut plan.heads, Pattern::Prev, Row(1), Row(2), 3);
    plan.attn_ops.push((OpId(0), Some(0), OpPart::Whole));
    div_prep(&mut plan.heads.self_head, DEN, PAYLOAD, 1.0, DST, 1);
    div_apply(&mut plan.units, NUM, ZERO, DST, 1, &dv);
    plan.div = Some(&dv);
    let c = layer_config(&plan);
    // Heads: prev (3 components), self (3 overwrites + 2 payload + 1 clear = 6).
    let attn = c.attn.unwrap();
    assert_eq!((attn.heads, attn.head_dim), (2, 6));
    assert!(!attn.qk && attn.bias && attn.zero_attn && attn.momentum.is_none());
    assert_eq!(c.norm, Some(NormConfig { eps: 0.0 }));
    let mlp = c.mlp.unwrap();
    assert_eq!((mlp.kind, mlp.hidden), (MlpKind::Bilinear, 1));
}

#[test]
fn payload_scale_is_the_smallest_power_of_two_meeting_the_bound() {
    let eps = f64::EPSILON;
    // 1 ≤ (eps/2)·P² ⇔ P² ≥ 2^53: P = 2^27.
    assert_eq!(payload_scale(1.0, 1.0, eps), Some((1u64 << 27) as f64));
    assert_eq!(payload_scale(0.0, 1.0, eps), Some(1.0));
    // 10⁶ ≤ 2⁻⁵³·P²·10⁻⁶ ⇔ P² ≥ 2⁵³·10¹²: 2⁴⁶ is short (2⁹² < 2⁵³·10¹² < 2⁹⁴), 2⁴⁷ suffices.
    assert_eq!(payload_scale(1e6, 1e-3, eps), Some((1u64 << 47) as f64));
}

#[test]
fn non_payload_bound_skips_the_payload_and_names_an_unbounded_row() {
    let b = |v: f64, who: &str| (v, who.to_string());
    let bounds = vec![b(1.0, "a"), b(f64::INFINITY, "p"), b(3.0, "c[1]")];
    let (r_max, m) = non_payload_bound(&bounds, Some([Row(1), Row(5)])).unwrap();
    // 1² + 3², rounded upward by a few ulps at most.
    assert!(
        (10.0..=10.0 * (1.0 + 4.0 * f64::EPSILON)).contains(&r_max),
        "{r_max}"
    );
    assert_eq!(m, 3.0);
    assert_eq!(non_payload_bound(&bounds, None), Err((Row(1), "p")));
}
