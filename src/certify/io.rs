//! The ends of the model: the embedding (token weights, bias and position table) puts every
//! input at its rows and every other row at 0; the read-out is the one-hot of the output row.
//! Both are compared as normal forms ([`super::coeffs`]).

use super::coeffs::{compare, Coeffs, Mismatch};
use super::error::{CertifyError, Part};
use super::exact::Dy;
use super::state::{Code, Content, Ctx, RowState};
use crate::ir::{Builtin, OpId, Shape};
use crate::layout::Row;

/// A term of one embedding row: the weight on token entry j (0 = y, 1+i = x[i]), or the
/// constant (bias + position) at column t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum EmbedTerm {
    Token(usize),
    Column(usize),
}

/// Which built-in input (and element) a row holds.
type RowInput = Option<(Builtin, usize)>;

/// The exact value of a built-in at column t for the position-dependent ones.
fn builtin_position_value(b: Builtin, t: usize) -> Option<f64> {
    match b {
        Builtin::Y | Builtin::X => None,
        other => Some(other.value(t, &[], 0)),
    }
}

/// The input each row holds, from layout.json. A built-in the program does not read may be left
/// out of the embedding (all-zero row): the row then holds 0 (and its range, unbounded for y
/// and x, stays out of division bounds).
fn input_rows(ctx: &Ctx) -> Result<Vec<RowInput>, CertifyError> {
    let mut row_input: Vec<RowInput> = vec![None; ctx.width];
    for (name, rows) in &ctx.layout.inputs {
        let b = Builtin::from_name(name).expect("checked by place_registers");
        for (e, r) in (rows[0].index()..rows[1].index()).enumerate() {
            if row_input[r].is_some() {
                return Err(CertifyError::new(
                    Part::Layout,
                    format!("row {r} holds two inputs"),
                ));
            }
            row_input[r] = Some((b, e));
        }
    }
    let (ew, eb, pos) = (
        &ctx.weights.embed.weight,
        &ctx.weights.embed.bias,
        &ctx.weights.pos,
    );
    for (r, ri) in row_input.iter_mut().enumerate() {
        if let Some((b, _)) = *ri {
            let all_zero = (0..=ctx.p.d).all(|j| ew.at2(r, j) == 0.0)
                && eb.data[r] == 0.0
                && (0..ctx.cols).all(|t| pos.at2(t, r) == 0.0);
            if ctx.p.input(b).is_none() && all_zero {
                *ri = None;
            }
        }
    }
    Ok(row_input)
}

/// Per row, the embedding as the weights give it: token weights, and bias + position at every
/// column (exact: the sum of two doubles as an exact dyadic sum).
fn derive_embedding(ctx: &Ctx) -> Result<Vec<Coeffs<EmbedTerm>>, CertifyError> {
    let e = &ctx.weights.embed;
    let bias = e.bias.exact_vec()?;
    let pos = ctx.weights.pos.sparse_cols()?;
    let rows = e.weight.sparse_rows()?.into_iter().zip(bias).zip(pos);
    Ok(rows
        .map(|((tokens, b), pos)| {
            let mut form: Coeffs<EmbedTerm> = tokens
                .into_iter()
                .map(|(j, v)| (EmbedTerm::Token(j), v))
                .collect();
            form.extend((0..ctx.cols).map(|t| (EmbedTerm::Column(t), b.clone())));
            for (t, v) in pos {
                form.entry(EmbedTerm::Column(t)).or_default().add_assign(&v);
            }
            form
        })
        .collect())
}

/// The embedding row of `input`: y and x by identity (weight 1 on their token entry), a
/// position-dependent built-in's value at every column, else 0.
fn expected_embedding(ctx: &Ctx, input: RowInput) -> Coeffs<EmbedTerm> {
    let mut form = Coeffs::new();
    match input {
        Some((Builtin::Y, 0)) => {
            form.insert(EmbedTerm::Token(0), Dy::int(1));
        }
        Some((Builtin::X, i)) => {
            form.insert(EmbedTerm::Token(1 + i), Dy::int(1));
        }
        Some((b, _)) => form.extend((0..ctx.cols).map(|t| {
            let v = builtin_position_value(b, t).unwrap_or(0.0);
            (EmbedTerm::Column(t), Dy::from_f64(v).expect("finite"))
        })),
        None => {}
    }
    form
}

/// The rejection of embedding row `r` (holding `input`) at its first differing term.
fn embedding_mismatch(
    ctx: &Ctx,
    r: usize,
    input: RowInput,
    m: &Mismatch<EmbedTerm>,
) -> CertifyError {
    let e = &ctx.weights.embed;
    let message = match m.term {
        EmbedTerm::Token(j) => {
            let tok = if j == 0 {
                "y".to_string()
            } else {
                format!("x[{}]", j - 1)
            };
            format!(
                "{}[{r}, {j}] (row {r}, token {tok}) is {}, expected {}",
                e.weight.name,
                m.got.to_f64(),
                m.want
            )
        }
        EmbedTerm::Column(t) => {
            let what = match input {
                Some((bi, _)) => bi.name().to_string(),
                None => "no input".to_string(),
            };
            format!(
                "row {r} ({what}) at column {t}: {} + {} = {}, expected {}",
                e.bias.name,
                ctx.weights.pos.name,
                m.got,
                m.want.to_f64()
            )
        }
    };
    CertifyError::new(Part::Embedding, message)
}

/// The embedding and position table: y and x rows by identity, built-in rows with their exact
/// values in every column, every other row 0. Returns the rows' contents after the embedding.
pub fn check_embedding(ctx: &Ctx) -> Result<Vec<RowState>, CertifyError> {
    check_embedding_with_codes(ctx, &[], 1)
}

/// [`check_embedding`] where the rows of `codes` (the paper target's position codes and bypass
/// rows, code scale `scale`) hold their code's exact value in every column instead of 0.
pub(crate) fn check_embedding_with_codes(
    ctx: &Ctx,
    codes: &[(Row, Code)],
    scale: usize,
) -> Result<Vec<RowState>, CertifyError> {
    let row_input = input_rows(ctx)?;
    let derived = derive_embedding(ctx)?;
    let mut state = Vec::with_capacity(ctx.width);
    for (r, (form, &input)) in derived.iter().zip(&row_input).enumerate() {
        let code = codes.iter().find(|(row, _)| row.index() == r).map(|x| x.1);
        let expected: Coeffs<EmbedTerm> = match code {
            Some(code) => (0..ctx.cols)
                .map(|t| {
                    let v = Dy::from_f64(code.value(t, scale)).expect("finite");
                    (EmbedTerm::Column(t), v)
                })
                .filter(|(_, v)| !v.is_zero())
                .collect(),
            None => expected_embedding(ctx, input),
        };
        compare(
            form,
            &expected,
            |_| (),
            |m, _| embedding_mismatch(ctx, r, input, m),
        )?;
        let content = match code {
            Some(code) => Content::Code(code),
            None => input_content(ctx, input),
        };
        state.push(RowState { content, err: 0.0 });
    }
    Ok(state)
}

/// What a row holding `input` holds after the embedding: the program's input register (its
/// embedding version), a built-in the program does not read, or 0.
fn input_content(ctx: &Ctx, input: RowInput) -> Content {
    match input {
        Some((bi, e)) => match ctx.p.input(bi) {
            Some(reg) => Content::Val {
                reg,
                elem: e,
                ver: None,
            },
            None => Content::Builtin(bi, e),
        },
        None => Content::Zero,
    }
}

/// A term of the read-out: the weight on row r, or the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ReadoutTerm {
    Row(Row),
    Bias,
}

/// The output's row: the program's output register is a scalar, layout.json places it there,
/// and config.json's `readout_row` (when given) agrees.
fn output_row(ctx: &Ctx) -> Result<Row, CertifyError> {
    let p = ctx.p;
    let out = p.reg(p.output);
    if out.shape != Shape::SCALAR {
        return Err(CertifyError::new(
            Part::Readout,
            "the output register is not a scalar",
        ));
    }
    let row = ctx.row(p.output, 0);
    let lo = &ctx.layout.output;
    if lo.register != out.name || lo.row != row {
        return Err(CertifyError::new(
            Part::Layout,
            format!(
                "output is `{}` at row {}; the program's output `{}` is at row {row}",
                lo.register, lo.row, out.name
            ),
        ));
    }
    match ctx.cfg.readout_row {
        Some(rr) if rr != row.index() => Err(CertifyError::new(
            Part::Readout,
            format!("config.json readout_row {rr}, the output is at row {row}"),
        )),
        _ => Ok(row),
    }
}

/// The read-out weights are the one-hot of `row`, the bias 0.
fn check_readout_weights(ctx: &Ctx, row: Row) -> Result<(), CertifyError> {
    let ro = &ctx.weights.readout;
    let mut derived: Coeffs<ReadoutTerm> = ro.weight.sparse_rows()?[0]
        .iter()
        .map(|(r, v)| (ReadoutTerm::Row(Row(*r)), v.clone()))
        .collect();
    derived.insert(ReadoutTerm::Bias, ro.bias.exact_vec()?[0].clone());
    let expected = Coeffs::from([(ReadoutTerm::Row(row), Dy::int(1))]);
    compare(
        &derived,
        &expected,
        |_| (),
        |m, _| {
            let message = match m.term {
                ReadoutTerm::Row(r) => format!(
                    "{}[0, {r}] is {}, expected {} (the output `{}` is row {row})",
                    ro.weight.name,
                    m.got.to_f64(),
                    m.want,
                    ctx.p.reg(ctx.p.output).name
                ),
                ReadoutTerm::Bias => format!(
                    "{} is {}, expected {}",
                    ro.bias.name,
                    m.got.to_f64(),
                    m.want
                ),
            };
            CertifyError::new(Part::Readout, message)
        },
    )
}

/// The read-out is the one-hot of the output register's row; that row holds the program's
/// final output. Returns the end-to-end error bound there.
pub fn check_readout(ctx: &Ctx, state: &[RowState]) -> Result<f64, CertifyError> {
    let p = ctx.p;
    let row = output_row(ctx)?;
    check_readout_weights(ctx, row)?;
    let last = p
        .ops
        .iter()
        .rposition(|o| o.kind.dst() == p.output)
        .map(OpId);
    let want = Content::Val {
        reg: p.output,
        elem: 0,
        ver: last,
    };
    if state[row].content != want {
        return Err(CertifyError::new(
            Part::Readout,
            format!(
                "after the last layer, {}, expected the output `{}` as written by {}",
                ctx.content_name(row, &state[row].content),
                p.reg(p.output).name,
                last.map(|k| ctx.op_label(k))
                    .unwrap_or_else(|| "the embedding".into())
            ),
        ));
    }
    Ok(state[row].err)
}
