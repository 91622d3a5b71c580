//! `layout.json`: where every register lives in the hidden state of a compiled model, and which
//! operations each layer performs (docs/FORMATS.md). Written by `emit`, read back by `certify`.

use crate::ir::OpId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const LAYOUT_FORMAT: &str = "icl-layout/1";

crate::ir::index_type!(
    /// Index of a layer (one attention step and one MLP step) of a model, 0-based.
    Layer
);

crate::ir::index_type!(
    /// A row of a compiled model's hidden state, 0-based.
    Row
);

/// `row + e`: the row `e` rows further down (element `e` of a register that starts at `row`).
impl std::ops::Add<usize> for Row {
    type Output = Row;
    fn add(self, by: usize) -> Row {
        Row(self.0 + by)
    }
}

/// `b - a`: how many rows `b` lies below `a` (a row's element index within a register).
impl std::ops::Sub for Row {
    type Output = usize;
    fn sub(self, a: Row) -> usize {
        self.0 - a.0
    }
}

/// Half-open row range `[start, end)`.
pub type Rows = [Row; 2];

/// Where one register lives. Each register of the program is placed once (all its live ranges —
/// write to last read before the next write — use these rows), but the rows are not reserved for
/// it: between its live ranges, and before its first write or after its last read, other
/// registers may occupy them (the compiler reuses the rows of dead registers). `rows` below lists
/// every occupant of every row with the layers it is live in. `written`/`last_read` span the
/// register's whole life; the output's `last_read` is the last layer (the read-out follows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterPlacement {
    pub name: String,
    /// `[rows, cols]` of the register.
    pub shape: [usize; 2],
    pub rows: Rows,
    /// Layer (0-based) of the first write; `None` for inputs (written by the embedding).
    pub written: Option<Layer>,
    /// Last layer that reads it (`None` if never read).
    pub last_read: Option<Layer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowNames {
    pub row: Row,
    /// Human-readable occupants, e.g. `A[0,1] (layers 3..=41)`.
    pub names: Vec<String>,
}

/// Which part of an operation a layer part carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpPart {
    /// The whole operation.
    Whole,
    /// The attention half of a LayerNorm division: writes the payload rows ±P·den and clears dst.
    DivPrep,
    /// The MLP half of a LayerNorm division: dst = g·(LN(h)[num] − LN(h)[zero_row]).
    DivApply,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedOp {
    /// Index into the unrolled program's operations.
    pub op: OpId,
    pub part: OpPart,
    /// The statement text, for people.
    pub text: String,
    /// `file:line:col`.
    pub at: String,
    /// Attention heads used (attention part only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOps {
    pub index: Layer,
    pub attn: Vec<PlacedOp>,
    pub mlp: Vec<PlacedOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputPlacement {
    pub register: String,
    pub row: Row,
}

/// Constants of a LayerNorm division layer (also derivable from the weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivConstants {
    pub layer: Layer,
    /// Payload scale P: rows `div_payload` hold +P·den and −P·den.
    pub payload_scale: f64,
    /// MLP gain: dst = g·u·(LN(h)[num] − LN(h)[zero_row]), g the gate weight, u the up bias.
    pub gain: f64,
    /// 1 in layouts written before the gain was split in two.
    #[serde(default = "unit_gain")]
    pub gain_up: f64,
}

fn unit_gain() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub format: String,
    pub width: usize,
    /// Input rows by built-in name (`y`, `x`, `one`, `is_x`, `is_y`, `count`).
    pub inputs: BTreeMap<String, Rows>,
    /// A row that is 0 in every column after every layer.
    pub zero_row: Row,
    /// Scratch rows of LayerNorm division, if the program divides.
    pub div_payload: Option<[Row; 2]>,
    pub div_constants: Vec<DivConstants>,
    pub registers: Vec<RegisterPlacement>,
    /// Every row of the hidden state, in order.
    pub rows: Vec<RowNames>,
    pub layers: Vec<LayerOps>,
    pub output: OutputPlacement,
    pub encoding: String,
    /// The `paper` target's fixed rows and constants (absent for the `exact` target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper: Option<PaperLayout>,
}

/// Rows written once by `pos.weight` and never again (the `paper` target's position codes):
/// c1 = t/D, c2 = t²/D², parity = t mod 2, and a constant 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRows {
    pub c1: Row,
    pub c2: Row,
    pub parity: Row,
    pub one: Row,
}

/// The GeLU-product input scales of one `mul` (its operands are read as ε_a·a and ε_b·b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductScales {
    pub layer: Layer,
    pub op: OpId,
    pub scales: [f64; 2],
}

/// The layer whose attention clears the payload rows a division left (the layer after it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadClear {
    pub layer: Layer,
    /// The division whose payload is cleared.
    pub op: OpId,
}

/// The `paper` target's fixed rows and constants (docs/FORMATS.md, "The paper target"). Every
/// number here is also derivable from the weights; the certifier checks that they agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperLayout {
    pub codes: CodeRows,
    /// D, a power of two ≥ max_len.
    pub code_scale: usize,
    /// Attention score scale N: a target key scores +N/2, every other real key ≤ −N/2, the null
    /// key 0.
    pub attention_scale: f64,
    /// The LayerNorm bypass rows, holding +N_ln and −N_ln.
    pub bypass: [Row; 2],
    pub bypass_scale: f64,
    /// G = N_ln·√(2/L) = N_ln/k for the width L = 2k²: an MLP unit's weights are G times the
    /// linear form it reads.
    pub bypass_gain: f64,
    pub products: Vec<ProductScales>,
    pub payload_clears: Vec<PayloadClear>,
}
