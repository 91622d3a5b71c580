//! The structural checks, before any weight is read: config.json and layout.json agree with
//! each other and with the program, every register has its rows, every operation is placed
//! exactly once in a part that can carry it, and the operations of one step write disjoint rows.

use super::error::{CertifyError, OpSite, Part};
use super::state::{written_rows, Ctx};
use super::ModelFiles;
use crate::ir::{Builtin, OpId, OpKind, Program, RegKind, RegMap, Register};
use crate::layout::{Layer, Layout, OpPart, PlacedOp, Row};
use crate::model::config::{ModelKind, MODEL_FORMAT};
use std::collections::{BTreeMap, BTreeSet};

fn layout_err(message: String) -> CertifyError {
    CertifyError::new(Part::Layout, message)
}

/// config.json against the program and the tensor file, then layout.json against config.json.
pub fn check_config(p: &Program, files: &ModelFiles) -> Result<(), CertifyError> {
    let cfg = &files.config;
    let bad = |m: String| Err(CertifyError::new(Part::Files, m));
    if cfg.format != MODEL_FORMAT {
        return bad(format!(
            "config.json: format `{}`, expected `{MODEL_FORMAT}`",
            cfg.format
        ));
    }
    if cfg.kind != ModelKind::Compiled {
        return bad("config.json: not a compiled model".into());
    }
    if cfg.dtype != files.dtype {
        return bad(format!(
            "config.json says dtype {}, model.safetensors holds {}",
            cfg.dtype.name(),
            files.dtype.name()
        ));
    }
    if cfg.d != p.d || cfg.n != p.n {
        return bad(format!(
            "config.json: d = {}, n = {}; the program has d = {}, n = {}",
            cfg.d, cfg.n, p.d, p.n
        ));
    }
    if cfg.max_len < p.columns() {
        return bad(format!(
            "config.json: max_len {} is below the program's {} columns",
            cfg.max_len,
            p.columns()
        ));
    }
    if cfg.final_norm.is_some() {
        return bad("config.json: a final LayerNorm — no exact normal form".into());
    }
    check_layout_header(&files.layout, cfg.width, cfg.layers.len())
}

/// layout.json's format, width, layer count, row names, zero row and payload rows.
fn check_layout_header(lay: &Layout, width: usize, layers: usize) -> Result<(), CertifyError> {
    if lay.format != crate::layout::LAYOUT_FORMAT {
        return Err(layout_err(format!(
            "format `{}`, expected `{}`",
            lay.format,
            crate::layout::LAYOUT_FORMAT
        )));
    }
    if lay.width != width {
        return Err(layout_err(format!(
            "width {}, config.json has {width}",
            lay.width
        )));
    }
    if lay.layers.len() != layers {
        return Err(layout_err(format!(
            "{} layers, config.json has {layers}",
            lay.layers.len()
        )));
    }
    if lay.rows.len() != width || lay.rows.iter().enumerate().any(|(i, r)| r.row.index() != i) {
        return Err(layout_err(
            "`rows` must name every row of the hidden state, in order".to_string(),
        ));
    }
    if lay.zero_row.index() >= width {
        return Err(layout_err(format!(
            "zero_row {} is outside the width {width}",
            lay.zero_row
        )));
    }
    if let Some(pl) = lay.div_payload {
        if pl[0].index() >= width || pl[1].index() >= width || pl[0] == pl[1] {
            return Err(layout_err(format!(
                "div_payload {pl:?} must be two distinct rows below the width"
            )));
        }
    }
    Ok(())
}

/// First row of every register, from layout.json, checked against the program: shapes, rows
/// inside the width, pinned rows, inputs at their built-in rows; and no register overlaps the
/// zero row or the payload rows.
pub fn place_registers(
    p: &Program,
    lay: &Layout,
    width: usize,
) -> Result<RegMap<Row>, CertifyError> {
    let mut reserved: BTreeSet<Row> = BTreeSet::new();
    reserved.insert(lay.zero_row);
    if let Some(pl) = lay.div_payload {
        reserved.extend(pl);
    }
    if let Some(name) = lay.inputs.keys().find(|n| Builtin::from_name(n).is_none()) {
        return Err(layout_err(format!(
            "inputs: `{name}` is not a built-in input"
        )));
    }
    let start = RegMap::try_from_fn(
        p,
        |r| Ok(register_rows(p.reg(r), lay, width, &reserved)?[0]),
    )?;
    check_input_rows(p, &lay.inputs, width, &reserved)?;
    Ok(start)
}

/// The rows layout.json gives register `r` (an input the layout does not place: its built-in's
/// rows), checked.
fn register_rows(
    r: &Register,
    lay: &Layout,
    width: usize,
    reserved: &BTreeSet<Row>,
) -> Result<[Row; 2], CertifyError> {
    let placed: Vec<_> = lay.registers.iter().filter(|x| x.name == r.name).collect();
    if placed.len() > 1 {
        return Err(layout_err(format!(
            "register `{}` is placed {} times",
            r.name,
            placed.len()
        )));
    }
    let rows = match (placed.first(), &r.kind) {
        (Some(pl), _) => {
            if pl.shape != [r.shape.rows, r.shape.cols] {
                return Err(layout_err(format!(
                    "register `{}` has shape {:?}, the program declares {}",
                    r.name, pl.shape, r.shape
                )));
            }
            pl.rows
        }
        (None, RegKind::Input(b)) => *lay.inputs.get(b.name()).ok_or_else(|| {
            layout_err(format!(
                "the program reads input `{}`, which has no rows",
                b.name()
            ))
        })?,
        (None, RegKind::Work) => {
            return Err(layout_err(format!("register `{}` has no rows", r.name)))
        }
    };
    check_register_rows(r, rows, lay, width, reserved)?;
    Ok(rows)
}

/// Register `r` at `rows`: its size inside the width, at its built-in's rows when an input, at
/// its pinned row, and clear of the reserved rows.
fn check_register_rows(
    r: &Register,
    rows: [Row; 2],
    lay: &Layout,
    width: usize,
    reserved: &BTreeSet<Row>,
) -> Result<(), CertifyError> {
    if rows[1] < rows[0] || rows[1] - rows[0] != r.shape.size() || rows[1].index() > width {
        return Err(layout_err(format!(
            "register `{}` ({}) is placed at rows {rows:?}: expected {} rows inside the width \
             {width}",
            r.name,
            r.shape,
            r.shape.size()
        )));
    }
    if let RegKind::Input(b) = r.kind {
        if lay.inputs.get(b.name()) != Some(&rows) {
            return Err(layout_err(format!(
                "input `{}` is placed at rows {rows:?}, but `inputs` says {:?}",
                b.name(),
                lay.inputs.get(b.name())
            )));
        }
    }
    if let Some(pin) = r.pinned {
        if rows[0].index() != pin {
            return Err(layout_err(format!(
                "register `{}` is pinned at row {pin}, placed at {rows:?}",
                r.name
            )));
        }
    }
    if let Some(bad) = row_range(rows).find(|x| reserved.contains(x)) {
        return Err(layout_err(format!(
            "register `{}` occupies row {bad}, the zero row or a division payload row",
            r.name
        )));
    }
    Ok(())
}

/// Every built-in input's rows: its size inside the width, clear of the reserved rows.
fn check_input_rows(
    p: &Program,
    inputs: &BTreeMap<String, [Row; 2]>,
    width: usize,
    reserved: &BTreeSet<Row>,
) -> Result<(), CertifyError> {
    for (name, rows) in inputs {
        let b = Builtin::from_name(name).expect("checked by place_registers");
        if rows[1] < rows[0] || rows[1] - rows[0] != b.shape(p.d).size() || rows[1].index() > width
        {
            return Err(layout_err(format!(
                "input `{name}` at rows {rows:?}: expected {} rows inside the width",
                b.shape(p.d).size()
            )));
        }
        if let Some(bad) = row_range(*rows).find(|x| reserved.contains(x)) {
            return Err(layout_err(format!(
                "input `{name}` occupies row {bad}, the zero row or a payload row"
            )));
        }
    }
    Ok(())
}

/// The rows `[start, end)`.
fn row_range(rows: [Row; 2]) -> impl Iterator<Item = Row> {
    (rows[0].index()..rows[1].index()).map(Row)
}

/// The placed operations of one layer: (attention, MLP).
pub type LayerPlacement = (Vec<PlacedOp>, Vec<PlacedOp>);

/// Per layer: the (attention, MLP) placed operations, checked: every op placed exactly once
/// (a div as DivPrep in a layer's attention and DivApply in the same layer's MLP), parts that
/// match the operation kinds, texts and locations that match the program.
pub fn check_placements(ctx: &Ctx) -> Result<Vec<LayerPlacement>, CertifyError> {
    let mut seen: Vec<Vec<(Layer, OpPart, bool)>> = vec![Vec::new(); ctx.p.ops.len()];
    let mut out = Vec::new();
    for (l, lo) in ctx.layout.layers.iter().enumerate() {
        let l = Layer(l);
        if lo.index != l {
            return Err(layout_err(format!("layers[{l}] has index {}", lo.index)));
        }
        for (is_attn, list) in [(true, &lo.attn), (false, &lo.mlp)] {
            for po in list {
                check_placed_op(ctx, l, is_attn, po)?;
                seen[po.op.index()].push((l, po.part, is_attn));
            }
        }
        out.push((lo.attn.clone(), lo.mlp.clone()));
    }
    for (k, s) in ctx.p.op_ids().zip(&seen) {
        check_placed_once(ctx, k, s)?;
    }
    Ok(out)
}

/// One placed operation of layer `l`: it exists, its text and location are the program's, and
/// its part (attention or MLP, whole or a division's half) can carry its kind.
fn check_placed_op(ctx: &Ctx, l: Layer, is_attn: bool, po: &PlacedOp) -> Result<(), CertifyError> {
    let p = ctx.p;
    let part = if is_attn { Part::Attention } else { Part::Mlp };
    let op = p.ops.get(po.op.index()).ok_or_else(|| {
        ctx.op_err(
            l,
            part,
            None,
            format!(
                "layout.json names operation {} (`{}`); the program has {}",
                po.op,
                po.text,
                p.ops.len()
            ),
        )
    })?;
    if po.text != op.text || po.at != p.location(op.span).to_string() {
        return Err(ctx.op_err(
            l,
            part,
            Some(po.op),
            format!(
                "layout.json labels operation {} as `{}` at {}",
                po.op, po.text, po.at
            ),
        ));
    }
    let ok = matches!(
        (is_attn, &op.kind, po.part),
        (true, OpKind::Mov { .. }, OpPart::Whole)
            | (true, OpKind::Div { .. }, OpPart::DivPrep)
            | (false, OpKind::Mul { .. }, OpPart::Whole)
            | (false, OpKind::Aff { .. }, OpPart::Whole)
            | (false, OpKind::Div { .. }, OpPart::DivApply)
    );
    if !ok {
        return Err(ctx.op_err(
            l,
            part,
            Some(po.op),
            format!(
                "a {} cannot be placed as {:?} in {}",
                op.kind.mnemonic(),
                po.part,
                if is_attn { "attention" } else { "an MLP" }
            ),
        ));
    }
    Ok(())
}

/// Operation `k`, placed at `seen` (layer, part, in attention): once, or a division's two halves
/// in one layer.
fn check_placed_once(
    ctx: &Ctx,
    k: OpId,
    seen: &[(Layer, OpPart, bool)],
) -> Result<(), CertifyError> {
    let ok = match &ctx.p.ops[k].kind {
        OpKind::Div { .. } => {
            seen.len() == 2
                && seen.iter().any(|x| x.1 == OpPart::DivPrep)
                && seen.iter().any(|x| x.1 == OpPart::DivApply)
                && seen[0].0 == seen[1].0
        }
        _ => seen.len() == 1,
    };
    if ok {
        return Ok(());
    }
    Err(CertifyError {
        layer: seen.first().map(|x| x.0),
        part: Part::Layout,
        op: Some(OpSite::of(ctx.p, k)),
        message: format!(
            "operation {k} is placed {} time(s) ({seen:?}); expected once (a div: its attention \
             half and its MLP half in one layer)",
            seen.len()
        ),
    })
}

/// Rows written by the ops of one step must be disjoint.
pub fn check_disjoint(
    ctx: &Ctx,
    l: Layer,
    part: Part,
    ops: &[PlacedOp],
) -> Result<(), CertifyError> {
    let mut owner: BTreeMap<Row, OpId> = BTreeMap::new();
    for po in ops {
        let rows = written_rows(ctx, po).ok_or_else(|| {
            ctx.op_err(
                l,
                part,
                Some(po.op),
                "a division but layout.json has no div_payload".into(),
            )
        })?;
        for r in rows {
            if let Some(o) = owner.insert(r, po.op) {
                return Err(ctx.op_err(
                    l,
                    part,
                    Some(po.op),
                    format!(
                        "writes row {r}, which `{}` in the same step also writes",
                        ctx.p.ops[o].text
                    ),
                ));
            }
        }
    }
    Ok(())
}
