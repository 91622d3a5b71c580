//! Row allocation for the `exact` target.
//!
//! Fixed rows: y at row 0, x at rows 1..=d (the token, embedded by identity), then the other
//! built-ins the program reads (`one`, `is_x`, `is_y`, `count`, supplied by `pos.weight`) in the
//! lowest rows not claimed by a pinned register. Input rows are never reused.
//!
//! Work registers are split into *live ranges* (webs): every write of a register overwrites all of
//! it, so a live range runs from one write to the last read before the next write. A live range
//! occupies the half-open stage interval `[first write stage, end)`, where `end` is the stage of
//! its last read (a new occupant may be written in that very stage: the read sees the old value
//! and every write is an overwrite of what the rows hold), or one past its last write when it is
//! never read; the output's last live range lasts to the end (the read-out). Two live ranges may
//! share a row only if their intervals are disjoint. All live ranges of one register share its
//! rows (layout.json places each register once); the rows are free for other registers between
//! them. Pinned registers take their pinned rows; the others are placed first-fit in order of
//! first write (the lowest rows where every live range of the register fits).
//!
//! After the registers come the two div payload rows (if the program divides) and the zero row
//! (never written).

use super::schedule::{self, Schedule};
use super::LowerError;
use crate::ir::{Builtin, OpId, Program, RegId, RegKind, RegMap};
use crate::layout::Row;

/// One live range of a work register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    pub reg: RegId,
    /// The op whose write starts it.
    pub def_op: OpId,
    /// Stage interval `[start, end)`.
    pub start: usize,
    pub end: usize,
    /// Block of the write, and block of the last read (None: never read).
    pub written_block: usize,
    pub last_read_block: Option<usize>,
    /// First row (the web occupies `row .. row + size`).
    pub row: Row,
}

#[derive(Debug, Clone)]
pub struct Allocation {
    pub width: usize,
    /// First row of each built-in input the program reads (y = 0, x = 1 always).
    pub input_rows: Vec<(Builtin, RegId, Row)>,
    pub webs: Vec<Web>,
    /// For op k: the web each register it reads refers to (`None` for inputs), in `reads()` order.
    pub read_webs: Vec<Vec<Option<usize>>>,
    /// For op k: the web it starts.
    pub write_web: Vec<usize>,
    pub zero_row: Row,
    pub payload: Option<[Row; 2]>,
    /// Block of the last read of each input register (None if never read).
    pub input_last_read: RegMap<Option<usize>>,
}

impl Allocation {
    /// First row of the register op `k` reads as its operand `i`, in the order of
    /// [`schedule::reads`] (for a div: den first, then num).
    pub fn read_row(&self, p: &Program, k: OpId, i: usize) -> Row {
        let reg = schedule::reads(&p.op(k).kind)[i].0;
        match self.read_webs[k.index()][i] {
            Some(w) => self.webs[w].row,
            None => self.input_row(reg),
        }
    }
    pub fn input_row(&self, reg: RegId) -> Row {
        self.input_rows
            .iter()
            .find(|(_, r, _)| *r == reg)
            .map(|(_, _, row)| *row)
            .expect("input register has a row")
    }
    /// First row of the register op `k` writes.
    pub fn write_row(&self, k: OpId) -> Row {
        self.webs[self.write_web[k.index()]].row
    }
}

/// Intervals `[start, end)` per row.
struct Occupancy {
    rows: Vec<Vec<(usize, usize)>>,
    reserved: Vec<bool>,
}

impl Occupancy {
    fn ensure(&mut self, n: usize) {
        if self.rows.len() < n {
            self.rows.resize(n, Vec::new());
            self.reserved.resize(n, false);
        }
    }
    fn free(&self, row: usize, size: usize, iv: (usize, usize)) -> bool {
        (row..row + size).all(|r| {
            r >= self.rows.len()
                || (!self.reserved[r] && self.rows[r].iter().all(|&(s, e)| e <= iv.0 || iv.1 <= s))
        })
    }
    fn take(&mut self, row: usize, size: usize, iv: (usize, usize)) {
        self.ensure(row + size);
        for r in row..row + size {
            self.rows[r].push(iv);
        }
    }
}

/// Rows for every register of `p` scheduled as `sched` (the rules are in the module comment).
pub fn allocate(p: &Program, sched: &Schedule) -> Result<Allocation, LowerError> {
    let LiveRanges {
        mut webs,
        read_webs,
        write_web,
        input_last_read,
    } = live_ranges(p, sched)?;
    let (mut occ, input_rows, next_fixed) = fixed_rows(p);
    place_pinned(p, &mut webs, &mut occ)?;
    place_free(p, &mut webs, &mut occ);
    let mut top = occ.rows.len().max(next_fixed);
    let payload = if p
        .ops
        .iter()
        .any(|o| matches!(o.kind, crate::ir::OpKind::Div { .. }))
    {
        top += 2;
        Some([Row(top - 2), Row(top - 1)])
    } else {
        None
    };
    let zero_row = Row(top);
    Ok(Allocation {
        width: top + 1,
        input_rows,
        webs,
        read_webs,
        write_web,
        zero_row,
        payload,
        input_last_read,
    })
}

/// The live ranges of the work registers, and which of them every op reads and writes.
struct LiveRanges {
    webs: Vec<Web>,
    read_webs: Vec<Vec<Option<usize>>>,
    write_web: Vec<usize>,
    input_last_read: RegMap<Option<usize>>,
}

/// Splits every work register into live ranges: each write starts one, each read extends the
/// current one to its stage (a div's divisor to the div's MLP stage), and the output's last one
/// lasts to the read-out.
fn live_ranges(p: &Program, sched: &Schedule) -> Result<LiveRanges, LowerError> {
    let nops = p.ops.len();
    let final_stage = schedule::mlp_stage(sched.blocks) + 1;
    let mut webs: Vec<Web> = Vec::new();
    let mut current: RegMap<Option<usize>> = RegMap::filled(p, None);
    let mut read_webs = Vec::with_capacity(nops);
    let mut write_web = Vec::with_capacity(nops);
    let mut input_last_read: RegMap<Option<usize>> = RegMap::filled(p, None);
    for (k, op) in p.ops.iter().enumerate() {
        let b = sched.block_of[k];
        let mut rw = Vec::new();
        let is_div = matches!(op.kind, crate::ir::OpKind::Div { .. });
        for (reg, part) in schedule::reads(&op.kind) {
            // A div's divisor stays live through the div's MLP half: the LayerNorm bound (and
            // the certifier) reads its range there, so its rows are not reused in that attention.
            let part = if is_div { schedule::Part::Mlp } else { part };
            let s = match part {
                schedule::Part::Attn => schedule::attn_stage(b),
                schedule::Part::Mlp => schedule::mlp_stage(b),
            };
            match p.reg(reg).kind {
                RegKind::Input(_) => {
                    input_last_read[reg] = Some(input_last_read[reg].map_or(b, |x| x.max(b)));
                    rw.push(None);
                }
                RegKind::Work => {
                    let w = current[reg].ok_or_else(|| LowerError::ReadBeforeWrite {
                        at: p.location(op.span),
                        op: OpId(k),
                        text: op.text.clone(),
                        reg: p.reg(reg).name.clone(),
                    })?;
                    let web = &mut webs[w];
                    web.end = web.end.max(s);
                    web.last_read_block = Some(web.last_read_block.map_or(b, |x| x.max(b)));
                    rw.push(Some(w));
                }
            }
        }
        read_webs.push(rw);
        let dst = op.kind.dst();
        if !matches!(p.reg(dst).kind, RegKind::Work) {
            return Err(LowerError::Unsupported {
                at: p.location(op.span),
                msg: format!(
                    "`{}` writes the built-in input `{}`",
                    op.text,
                    p.reg(dst).name
                ),
            });
        }
        let (wf, wl) = schedule::writes(&op.kind);
        let st = |part| match part {
            schedule::Part::Attn => schedule::attn_stage(b),
            schedule::Part::Mlp => schedule::mlp_stage(b),
        };
        webs.push(Web {
            reg: dst,
            def_op: OpId(k),
            start: st(wf),
            end: st(wl) + 1,
            written_block: b,
            last_read_block: None,
            row: Row(usize::MAX),
        });
        current[dst] = Some(webs.len() - 1);
        write_web.push(webs.len() - 1);
    }
    // The output is read after the last layer.
    if let Some(w) = current[p.output] {
        webs[w].end = final_stage;
    }
    Ok(LiveRanges {
        webs,
        read_webs,
        write_web,
        input_last_read,
    })
}

/// The reserved rows: y at 0, x at 1..=d, then the other built-ins `p` reads in the lowest rows
/// no pinned register claims. Returns the occupancy, the inputs' rows and the first row after
/// them.
fn fixed_rows(p: &Program) -> (Occupancy, Vec<(Builtin, RegId, Row)>, usize) {
    let d = p.d;
    let mut occ = Occupancy {
        rows: Vec::new(),
        reserved: Vec::new(),
    };
    occ.ensure(d + 1);
    for r in 0..=d {
        occ.reserved[r] = true;
    }
    let pinned_rows = |r: usize| -> bool {
        p.registers.iter().any(|reg| {
            matches!(reg.kind, RegKind::Work)
                && reg
                    .pinned
                    .is_some_and(|s| s <= r && r < s + reg.shape.size())
        })
    };
    let mut input_rows = Vec::new();
    let mut next_fixed = d + 1;
    for b in Builtin::ALL {
        let Some(reg) = p.input(b) else { continue };
        let row = match b {
            Builtin::Y => 0,
            Builtin::X => 1,
            _ => {
                while pinned_rows(next_fixed) {
                    next_fixed += 1;
                }
                let r = next_fixed;
                next_fixed += 1;
                occ.ensure(r + 1);
                occ.reserved[r] = true;
                r
            }
        };
        input_rows.push((b, reg, Row(row)));
    }
    (occ, input_rows, next_fixed)
}

/// Pinned registers take their pinned rows, unless those overlap an input or another pinned
/// register while both are live.
fn place_pinned(p: &Program, webs: &mut [Web], occ: &mut Occupancy) -> Result<(), LowerError> {
    let d = p.d;
    for (wi, web) in webs.iter_mut().enumerate() {
        let reg = p.reg(web.reg);
        if let Some(row) = reg.pinned {
            let size = reg.shape.size();
            if row <= d || (row..row + size).any(|r| r < occ.reserved.len() && occ.reserved[r]) {
                return Err(LowerError::Unsupported {
                    at: p.location(reg.span),
                    msg: format!(
                        "register `{}` is pinned to rows {}..{}, which overlap the input rows",
                        reg.name,
                        row,
                        row + size
                    ),
                });
            }
            if !occ.free(row, size, (web.start, web.end)) {
                return Err(LowerError::Unsupported {
                    at: p.location(reg.span),
                    msg: format!(
                        "register `{}` is pinned to rows {}..{}, which another pinned register \
                         occupies while it is live (live range {wi}, from `{}`)",
                        reg.name,
                        row,
                        row + size,
                        p.ops[web.def_op].text
                    ),
                });
            }
            occ.take(row, size, (web.start, web.end));
            web.row = Row(row);
        }
    }
    Ok(())
}

/// The other registers, first fit in order of first write above the input rows: all live ranges
/// of a register share its rows (one placement per register in layout.json), other registers may
/// use the gaps.
fn place_free(p: &Program, webs: &mut [Web], occ: &mut Occupancy) {
    let d = p.d;
    let mut by_reg: RegMap<Vec<usize>> = RegMap::filled(p, Vec::new());
    for (w, web) in webs.iter().enumerate() {
        if p.reg(web.reg).pinned.is_none() {
            by_reg[web.reg].push(w);
        }
    }
    let mut order: Vec<RegId> = p.reg_ids().filter(|&r| !by_reg[r].is_empty()).collect();
    order.sort_by_key(|&r| (webs[by_reg[r][0]].start, r));
    let base = d + 1;
    for reg in order {
        let size = p.reg(reg).shape.size();
        let ivs: Vec<(usize, usize)> = by_reg[reg]
            .iter()
            .map(|&w| (webs[w].start, webs[w].end))
            .collect();
        let mut r = base;
        while !ivs.iter().all(|&iv| occ.free(r, size, iv)) {
            r += 1;
        }
        for (&w, &iv) in by_reg[reg].iter().zip(&ivs) {
            occ.take(r, size, iv);
            webs[w].row = Row(r);
        }
    }
}
