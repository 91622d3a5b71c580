//! `layout.json` of a compile: where every input and register lives, what every row holds over
//! the layers, the operations of every layer with the heads they use, the division constants and
//! the output row (docs/FORMATS.md).

use super::super::alloc::Allocation;
use super::{elem_name, BlockPlan, DivReport};
use crate::ir::{Builtin, OpId, Program, RegId};
use crate::layout::{
    DivConstants, Layer, LayerOps, Layout, OpPart, OutputPlacement, PlacedOp, RegisterPlacement,
    Row, RowNames, LAYOUT_FORMAT,
};
use std::collections::BTreeMap;

/// The ops of block `l` as `layout.json` places them: the attention's with the heads they use
/// (a mov's pattern head and the self head; a division's self head), then the MLP's.
pub(super) fn placed_ops(p: &Program, l: Layer, plan: &BlockPlan) -> LayerOps {
    let self_idx = plan.heads.self_index();
    let attn = plan
        .attn_ops
        .iter()
        .map(|&(k, h, part)| {
            let heads = match h {
                Some(h) => vec![h, self_idx],
                None => vec![self_idx],
            };
            placed(p, k, part, heads)
        })
        .collect();
    let mlp = plan
        .mlp_ops
        .iter()
        .map(|&(k, part)| placed(p, k, part, vec![]))
        .collect();
    LayerOps {
        index: l,
        attn,
        mlp,
    }
}

/// Op `k` as `layout.json` places it: its source text and location, and the heads it uses.
pub(in crate::lower) fn placed(p: &Program, k: OpId, part: OpPart, heads: Vec<usize>) -> PlacedOp {
    let op = &p.ops[k];
    PlacedOp {
        op: k,
        part,
        text: op.text.clone(),
        // layout.json keeps the location as text (docs/FORMATS.md).
        at: p.location(op.span).to_string(),
        heads,
    }
}

/// `layout.json`: where every input and register lives, what every row holds over the layers,
/// the ops of every layer, the division constants and the output row.
pub(in crate::lower) fn build_layout(
    p: &Program,
    alloc: &Allocation,
    nblocks: usize,
    layers: Vec<LayerOps>,
    divs: &[DivReport],
    out_row: Row,
) -> Layout {
    let mut names: Vec<Vec<String>> = vec![Vec::new(); alloc.width];
    let (inputs, mut registers) = input_placements(p, alloc, &mut names);
    registers.extend(work_placements(p, alloc, nblocks, &mut names));
    if let Some([p1, p2]) = alloc.payload {
        names[p1.index()].push("div payload +P·den".into());
        names[p2.index()].push("div payload −P·den".into());
    }
    names[alloc.zero_row.index()].push("zero (never written)".into());
    let rows = names
        .into_iter()
        .enumerate()
        .map(|(row, mut names)| {
            if names.is_empty() {
                names.push("unused (always 0)".into());
            }
            RowNames {
                row: Row(row),
                names,
            }
        })
        .collect();
    Layout {
        format: LAYOUT_FORMAT.into(),
        width: alloc.width,
        inputs,
        zero_row: alloc.zero_row,
        div_payload: alloc.payload,
        div_constants: divs
            .iter()
            .map(|d| DivConstants {
                layer: d.layer,
                payload_scale: d.payload_scale,
                gain: d.gain,
                gain_up: d.gain_up,
            })
            .collect(),
        registers,
        rows,
        layers,
        output: OutputPlacement {
            register: p.reg(p.output).name.clone(),
            row: out_row,
        },
        encoding: "columns x̃_1, ỹ_1, …, x̃_n, ỹ_n, x̃_{n+1}; x̃_k = [0, x_k], ỹ_k = [y_k, 0…]; \
                   read the output row at even columns"
            .into(),
        paper: None,
    }
}

/// The inputs' rows (y and x always, at rows 0..=d) and their register placements; names the
/// rows of inputs the program never reads (embedded as 0) and of every input it reads.
fn input_placements(
    p: &Program,
    alloc: &Allocation,
    names: &mut [Vec<String>],
) -> (BTreeMap<String, [Row; 2]>, Vec<RegisterPlacement>) {
    let mut inputs = BTreeMap::new();
    let mut registers = Vec::new();
    inputs.insert("y".to_string(), [Row(0), Row(1)]);
    inputs.insert("x".to_string(), [Row(1), Row(p.d + 1)]);
    if p.input(Builtin::Y).is_none() {
        names[0].push("y (not read: embedded as 0)".into());
    }
    if p.input(Builtin::X).is_none() {
        for (i, n) in names.iter_mut().enumerate().skip(1).take(p.d) {
            n.push(format!("x[{}] (not read: embedded as 0)", i - 1));
        }
    }
    for &(b, reg, row) in &alloc.input_rows {
        let r = p.reg(reg);
        let size = r.shape.size();
        inputs.insert(b.name().to_string(), [row, row + size]);
        registers.push(RegisterPlacement {
            name: r.name.clone(),
            shape: [r.shape.rows, r.shape.cols],
            rows: [row, row + size],
            written: None,
            last_read: alloc.input_last_read[reg].map(Layer),
        });
        for e in 0..size {
            names[(row + e).index()].push(format!("{} (input)", elem_name(&r.name, r.shape, e)));
        }
    }
    (inputs, registers)
}

/// The work registers' placements in order of first write (the output live until the last
/// layer), and per row the registers it holds with their layer spans (consecutive live ranges of
/// the same element merged).
fn work_placements(
    p: &Program,
    alloc: &Allocation,
    nblocks: usize,
    names: &mut [Vec<String>],
) -> Vec<RegisterPlacement> {
    let last_layer = nblocks.saturating_sub(1);
    let final_out_web = alloc.webs.iter().rposition(|w| w.reg == p.output);
    // Per row: (first layer, last layer, register, element) of every live range, merged below.
    let mut spans: Vec<Vec<(usize, usize, RegId, usize)>> = vec![Vec::new(); alloc.width];
    let mut placements: BTreeMap<RegId, RegisterPlacement> = BTreeMap::new();
    for (wi, w) in alloc.webs.iter().enumerate() {
        let r = p.reg(w.reg);
        let size = r.shape.size();
        let last_read = if Some(wi) == final_out_web {
            Some(last_layer)
        } else {
            w.last_read_block
        };
        let pl = placements
            .entry(w.reg)
            .or_insert_with(|| RegisterPlacement {
                name: r.name.clone(),
                shape: [r.shape.rows, r.shape.cols],
                rows: [w.row, w.row + size],
                written: Some(Layer(w.written_block)),
                last_read: None,
            });
        pl.last_read = pl.last_read.max(last_read.map(Layer));
        let until = last_read.unwrap_or(w.written_block);
        for e in 0..size {
            spans[(w.row + e).index()].push((w.written_block, until, w.reg, e));
        }
    }
    for (row, sp) in spans.iter_mut().enumerate() {
        sp.sort();
        let mut merged: Vec<(usize, usize, RegId, usize)> = Vec::new();
        for &s in sp.iter() {
            match merged.last_mut() {
                Some(m) if m.2 == s.2 && m.3 == s.3 => m.1 = m.1.max(s.1),
                _ => merged.push(s),
            }
        }
        for (a, b, reg, e) in merged {
            let r = p.reg(reg);
            names[row].push(format!(
                "{} (layers {a}..={b})",
                elem_name(&r.name, r.shape, e)
            ));
        }
    }
    let mut placed: Vec<RegisterPlacement> = placements.into_values().collect();
    placed.sort_by_key(|pl| (pl.written, pl.rows[0]));
    placed
}
