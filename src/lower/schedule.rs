//! List scheduling of a checked program into blocks for the `exact` target (docs/ARCHITECTURE.md).
//!
//! A block is one attention step followed by one MLP step. `mov` runs in the attention, `mul` and
//! `aff` in the MLP, and `div` in both (DivPrep in the attention, DivApply in the MLP). A div's MLP
//! holds nothing else (its LayerNorm normalizes the whole input) and a block holds at most one div
//! (the payload rows are shared).
//!
//! Stages are numbered in execution order: 0 is the embedding (inputs are written there), block b's
//! attention is stage 2b+1 and its MLP stage 2b+2. Within one stage every part reads the stage's
//! input and the parts' writes are added afterwards, so a read and a write of the same rows in one
//! stage see the old value — which is program order when the reader comes first.
//!
//! Ops are placed in program order, each in the earliest block that respects every hazard with the
//! ops before it, on registers:
//! - RAW: every read stage > the last write stage of the register so far;
//! - WAR: the first write stage ≥ the last read stage of dst so far (same stage: the read sees the
//!   old value, which program order asks for);
//! - WAW: the first write stage > the last write stage of dst so far.
//!
//! Hazards are tracked per register, not per live range (no renaming): renaming would let every
//! independent `mov` of a loop be hoisted to the first block, keeping all of them live at once.

use crate::ir::{OpKind, Program, RegId, RegKind, RegMap};

/// Attention stage of block `b`.
pub fn attn_stage(b: usize) -> usize {
    2 * b + 1
}
/// MLP stage of block `b`.
pub fn mlp_stage(b: usize) -> usize {
    2 * b + 2
}

/// Where an op reads and writes, relative to its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Attn,
    Mlp,
}

fn stage(part: Part, b: usize) -> usize {
    match part {
        Part::Attn => attn_stage(b),
        Part::Mlp => mlp_stage(b),
    }
}

/// Reads of an op, each with the part that reads it.
pub fn reads(op: &OpKind) -> Vec<(RegId, Part)> {
    match op {
        OpKind::Mov { src, .. } => vec![(*src, Part::Attn)],
        OpKind::Mul { a, b, .. } => vec![(a.reg, Part::Mlp), (b.reg, Part::Mlp)],
        // DivPrep reads den (the payload ±P·den); DivApply reads num (through the LayerNorm).
        OpKind::Div { num, den, .. } => vec![(*den, Part::Attn), (*num, Part::Mlp)],
        OpKind::Aff { terms, .. } => terms.iter().map(|t| (t.src.reg, Part::Mlp)).collect(),
    }
}

/// First and last part that writes dst (a div clears dst in the attention, fills it in the MLP).
pub fn writes(op: &OpKind) -> (Part, Part) {
    match op {
        OpKind::Mov { .. } => (Part::Attn, Part::Attn),
        OpKind::Mul { .. } | OpKind::Aff { .. } => (Part::Mlp, Part::Mlp),
        OpKind::Div { .. } => (Part::Attn, Part::Mlp),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Block of every op.
    pub block_of: Vec<usize>,
    /// Number of blocks (layers).
    pub blocks: usize,
}

#[derive(Default, Clone)]
struct BlockUse {
    has_div: bool,
    mlp_ops: usize,
}

/// Schedule `p` (see the module comment).
pub fn schedule(p: &Program) -> Schedule {
    // Stage of the last write / read of each register so far (inputs: written by the embedding).
    let mut last_write: RegMap<Option<usize>> = RegMap::from_fn(p, |r| {
        matches!(p.reg(r).kind, RegKind::Input(_)).then_some(0)
    });
    let mut last_read: RegMap<Option<usize>> = RegMap::filled(p, None);
    let mut blocks: Vec<BlockUse> = Vec::new();
    let mut block_of = Vec::with_capacity(p.ops.len());
    for op in &p.ops {
        let kind = &op.kind;
        let rs = reads(kind);
        let (w_first, w_last) = writes(kind);
        let dst = kind.dst();
        let ok_hazards = |b: usize| -> bool {
            let raw = rs
                .iter()
                .all(|&(r, part)| last_write[r].is_none_or(|w| stage(part, b) > w));
            let war = last_read[dst].is_none_or(|r| stage(w_first, b) >= r);
            let waw = last_write[dst].is_none_or(|w| stage(w_first, b) > w);
            raw && war && waw
        };
        // Hazard constraints are monotone in b: find the first block meeting them, then the first
        // block from there whose occupancy admits the op.
        let mut b = 0;
        while !ok_hazards(b) {
            b += 1;
        }
        loop {
            let u = blocks.get(b).cloned().unwrap_or_default();
            let fits = match kind {
                OpKind::Mov { .. } => true,
                OpKind::Mul { .. } | OpKind::Aff { .. } => !u.has_div,
                OpKind::Div { .. } => !u.has_div && u.mlp_ops == 0,
            };
            if fits {
                break;
            }
            b += 1;
        }
        if blocks.len() <= b {
            blocks.resize(b + 1, BlockUse::default());
        }
        match kind {
            OpKind::Mov { .. } => {}
            OpKind::Mul { .. } | OpKind::Aff { .. } => blocks[b].mlp_ops += 1,
            OpKind::Div { .. } => {
                blocks[b].has_div = true;
                blocks[b].mlp_ops += 1;
            }
        }
        for &(r, part) in &rs {
            let s = stage(part, b);
            last_read[r] = Some(last_read[r].map_or(s, |x| x.max(s)));
        }
        let s = stage(w_last, b);
        last_write[dst] = Some(last_write[dst].map_or(s, |x| x.max(s)));
        block_of.push(b);
    }
    Schedule {
        blocks: blocks.len(),
        block_of,
    }
}
