//! Figures as PNG and SVG: line charts and annotated heatmaps, drawn with `plotters`.
//!
//! A [`Figure`] is a grid of [`Panel`]s (`columns` per row, each `panel_size` pixels, the image
//! `columns·w × rows·h`), every panel either a [`LineChart`] (labelled [`Series`] of `(x, y)`
//! points on linear or logarithmic axes) or a [`Heatmap`] (a matrix of values, cells coloured
//! with viridis and annotated with their value in short scientific notation, see
//! [`format_sci`]). [`write_figure`] renders a figure to `stem.png` and `stem.svg` (the
//! suffixes are appended to `stem`, never substituted for an extension it has) and returns both
//! paths, PNG first; [`write_line_chart`] is the one-panel shorthand.
//!
//! * Input is checked before anything is written: a figure without panels, a chart without
//!   series, a chart none of whose points can be drawn, or a malformed heatmap is a
//!   [`PlotError`] and leaves no file behind. Nothing here panics on bad input.
//! * Non-finite points are skipped as missing; points `≤ 0` are skipped on a logarithmic axis,
//!   and the series' legend entry says how many ("(2 points ≤ 0 not shown)", or "(no drawable
//!   points)" when none is left).
//! * [`Scale::Auto`] picks a logarithmic axis when the positive finite values span more than
//!   two decades (largest / smallest > 100), else a linear one. On an x axis of example counts
//!   `k = 0…n` with `n > 100` that drops `k = 0`: say [`Scale::Linear`] there.
//! * Line charts: ten palette colours, then the same colours with other markers (circle,
//!   triangle, square, diamond); a marker on every point, so a one-point series shows. The
//!   legend goes inside the plot where it hides no data, else to the right of the plot.
//! * Each file is written atomically (a temporary file in the same directory, then a rename);
//!   the parent directory is created when missing. The same figure gives byte-identical files.
//!
//! Text is set in DejaVu Sans, embedded in the binary (`assets/fonts/DejaVuSans.ttf`, 742 KiB,
//! licence in `assets/fonts/LICENSE-DejaVu.txt`) and registered once per process with
//! plotters' `ab_glyph` font backend under the family names `sans-serif`, `serif` and
//! `monospace`, so no system font is needed. The PNG is rasterised with that font; the SVG
//! holds `<text>` elements (XML-escaped by plotters) in `font-family="sans-serif"`, laid out
//! with DejaVu's metrics, so the viewer's sans-serif font draws them.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

mod heatmap;
mod line;
#[cfg(test)]
mod tests;

use heatmap::*;
use line::*;

/// One labelled line of `(x, y)` points, drawn in the given order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points; non-finite ones (and `≤ 0` ones on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from a label and its points.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
        }
    }
}

/// How an axis maps values to positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Linear axis.
    Linear,
    /// Base-10 logarithmic axis; values `≤ 0` are skipped.
    Log,
    /// Logarithmic when the positive finite values span more than two decades, else linear.
    #[default]
    Auto,
}

/// A line chart: one line plus markers per series, a legend, a title and axis labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub x_scale: Scale,
    pub y_scale: Scale,
}

impl LineChart {
    /// A chart with no series yet and [`Scale::Auto`] on both axes.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..LineChart::default()
        }
    }
}

/// A matrix of values drawn as coloured cells, each annotated with its value (`1.3e-4`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heatmap {
    pub title: String,
    /// One label per row (top to bottom), or empty for the row indices.
    pub row_labels: Vec<String>,
    /// One label per column (left to right), or empty for the column indices.
    pub col_labels: Vec<String>,
    /// Axis title of the rows (drawn vertically on the left); may be empty.
    pub row_title: String,
    /// Axis title of the columns (drawn below the grid); may be empty.
    pub col_title: String,
    /// `values[row][col]`; every row has the same length. NaN is a blank cell; ±∞ (and, with
    /// `log_color`, values `≤ 0`) are blank but annotated (`inf`, `0`, `-3e-2`).
    pub values: Vec<Vec<f64>>,
    /// `(row, col)` cells drawn with a thick red border (e.g. each column's minimum).
    pub marked: Vec<(usize, usize)>,
    /// Colour by `log10(value)`; cells `≤ 0` are then left blank but still annotated.
    pub log_color: bool,
}

/// One cell of a [`Figure`].
#[derive(Clone, Debug, PartialEq)]
pub enum Panel {
    Line(LineChart),
    Heat(Heatmap),
}

/// Panels on a grid, filled row by row; the image is `columns·w × rows·h` pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub panels: Vec<Panel>,
    /// Panels per row (≥ 1).
    pub columns: usize,
    /// Size of one panel in pixels, `(width, height)`.
    pub panel_size: (u32, u32),
}

impl Figure {
    /// Default size of one panel: modest, so that committed PNGs stay small.
    pub const DEFAULT_PANEL_SIZE: (u32, u32) = (640, 420);

    /// A figure of `panels`, `columns` per row, each of [`Figure::DEFAULT_PANEL_SIZE`].
    pub fn new(panels: Vec<Panel>, columns: usize) -> Self {
        Figure {
            panels,
            columns,
            panel_size: Self::DEFAULT_PANEL_SIZE,
        }
    }
}

/// Why a figure was not written. Every variant names the file (or the `stem.{png,svg}` pair).
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot write {}.{{png,svg}}: {what}", .stem.display())]
    Layout { stem: PathBuf, what: String },
    #[error("cannot write {}.{{png,svg}}: panel {panel} ({title:?}) has no series", .stem.display())]
    NoSeries {
        stem: PathBuf,
        panel: usize,
        title: String,
    },
    #[error(
        "cannot write {}.{{png,svg}}: panel {panel} ({title:?}) has no drawable point \
         (all are non-finite, or ≤ 0 on a logarithmic axis)",
        .stem.display()
    )]
    NoFinitePoints {
        stem: PathBuf,
        panel: usize,
        title: String,
    },
    #[error("cannot write {}.{{png,svg}}: heatmap panel {panel} ({title:?}): {what}", .stem.display())]
    BadHeatmap {
        stem: PathBuf,
        panel: usize,
        title: String,
        what: String,
    },
    #[error("cannot register the embedded DejaVu Sans font with plotters: {0}")]
    Font(String),
    #[error("cannot draw {}: {message}", .file.display())]
    Backend { file: PathBuf, message: String },
    #[error("cannot write {}: {source}", .file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `stem.png` and `stem.svg` for `fig` and returns their paths (PNG first).
pub fn write_figure(fig: &Figure, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let plans = plan_figure(fig, stem)?;
    let size = canvas_size(fig, stem)?;
    ensure_font()?;
    let png = with_suffix(stem, "png");
    let svg = with_suffix(stem, "svg");
    let svg_text = render_svg(&plans, fig, size).map_err(|message| PlotError::Backend {
        file: svg.clone(),
        message,
    })?;
    let tmp_png = render_png_tmp(&plans, fig, size, &png)?;
    let finish = crate::tensors::write_atomic(&svg, svg_text.as_bytes())
        .map_err(|source| PlotError::Io {
            file: svg.clone(),
            source,
        })
        .and_then(|()| commit_tmp(&tmp_png, &png));
    if finish.is_err() {
        let _ = fs::remove_file(&tmp_png);
    }
    finish.map(|()| vec![png, svg])
}

/// Writes a one-panel figure of `chart` ([`Figure::DEFAULT_PANEL_SIZE`]) to `stem.{png,svg}`.
pub fn write_line_chart(chart: &LineChart, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    write_figure(&Figure::new(vec![Panel::Line(chart.clone())], 1), stem)
}

// ---------------------------------------------------------------------------------------------
// Font, files
// ---------------------------------------------------------------------------------------------

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font once per process; later calls return the first outcome.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in ["sans-serif", "serif", "monospace"] {
                plotters::style::register_font(family, FontStyle::Normal, FONT_BYTES).map_err(
                    |_| "assets/fonts/DejaVuSans.ttf is not a font ab_glyph can read".to_string(),
                )?;
            }
            Ok(())
        })
        .clone()
        .map_err(PlotError::Font)
}

/// `stem` with `.ext` appended (`a/b.v2` → `a/b.v2.png`).
fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Renders the PNG into a temporary `.png` file next to `png` (plotters' image encoder picks
/// the format from the extension) and returns its path.
fn render_png_tmp(
    plans: &[PanelPlan],
    fig: &Figure,
    size: (u32, u32),
    png: &Path,
) -> Result<PathBuf, PlotError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = png
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        file: png.to_path_buf(),
        source,
    })?;
    let name = png
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}.png", std::process::id()));
    // The backend is dropped inside `render_png`, before the temporary file is removed.
    render_png(plans, fig, size, &tmp).map_err(|message| {
        let _ = fs::remove_file(&tmp);
        PlotError::Backend {
            file: png.to_path_buf(),
            message,
        }
    })?;
    Ok(tmp)
}

/// Flushes the temporary file to disk and renames it onto `dest`.
fn commit_tmp(tmp: &Path, dest: &Path) -> Result<(), PlotError> {
    let io = |source| PlotError::Io {
        file: dest.to_path_buf(),
        source,
    };
    fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(io)?;
    fs::rename(tmp, dest).map_err(io)
}

// ---------------------------------------------------------------------------------------------
// Checking the input: everything that can be refused is refused before drawing
// ---------------------------------------------------------------------------------------------

/// A validated panel, with everything drawing needs precomputed.
enum PanelPlan<'a> {
    Line(LinePlan<'a>),
    Heat(HeatPlan<'a>),
}

/// What is wrong with one panel (turned into a [`PlotError`] by [`plan_figure`]).
enum Invalid {
    NoSeries,
    NoPoints,
    Heat(String),
}

fn plan_figure<'a>(fig: &'a Figure, stem: &Path) -> Result<Vec<PanelPlan<'a>>, PlotError> {
    let stem_buf = stem.to_path_buf();
    if fig.panels.is_empty() {
        return Err(PlotError::Layout {
            stem: stem_buf,
            what: "the figure has no panels".into(),
        });
    }
    let mut plans = Vec::with_capacity(fig.panels.len());
    for (panel, p) in fig.panels.iter().enumerate() {
        let (plan, title) = match p {
            Panel::Line(c) => (plan_line(c).map(PanelPlan::Line), &c.title),
            Panel::Heat(h) => (plan_heat(h).map(PanelPlan::Heat), &h.title),
        };
        let (stem, title) = (stem_buf.clone(), title.clone());
        plans.push(plan.map_err(|e| match e {
            Invalid::NoSeries => PlotError::NoSeries { stem, panel, title },
            Invalid::NoPoints => PlotError::NoFinitePoints { stem, panel, title },
            Invalid::Heat(what) => PlotError::BadHeatmap {
                stem,
                panel,
                title,
                what,
            },
        })?);
    }
    Ok(plans)
}

/// Largest canvas accepted, in pixels (plotters' bitmap size arithmetic is in `u32`).
const MAX_PIXELS: u64 = 1 << 26;

fn canvas_size(fig: &Figure, stem: &Path) -> Result<(u32, u32), PlotError> {
    let bad = |what: String| PlotError::Layout {
        stem: stem.to_path_buf(),
        what,
    };
    let (w, h) = fig.panel_size;
    if fig.columns == 0 || w < 64 || h < 64 {
        return Err(bad(format!(
            "columns must be ≥ 1 and panel_size at least 64×64 (got {} columns, {w}×{h})",
            fig.columns
        )));
    }
    let rows = fig.panels.len().div_ceil(fig.columns);
    let total_w = u64::from(w) * fig.columns as u64;
    let total_h = u64::from(h) * rows as u64;
    if total_w * total_h > MAX_PIXELS || total_w > 1 << 15 || total_h > 1 << 15 {
        return Err(bad(format!(
            "the canvas would be {total_w}×{total_h} pixels, too large"
        )));
    }
    Ok((total_w as u32, total_h as u32))
}

// ---------------------------------------------------------------------------------------------
// Drawing the whole figure
// ---------------------------------------------------------------------------------------------

/// Renders the figure into an SVG document held in memory.
fn render_svg(plans: &[PanelPlan], fig: &Figure, size: (u32, u32)) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw_figure(&root, plans, fig)?;
        root.present().map_err(msg)?;
    }
    Ok(out)
}

/// Renders the figure and encodes it as PNG into `tmp` (which must end in `.png`).
fn render_png(
    plans: &[PanelPlan],
    fig: &Figure,
    size: (u32, u32),
    tmp: &Path,
) -> Result<(), String> {
    let root = BitMapBackend::new(tmp, size).into_drawing_area();
    draw_figure(&root, plans, fig)?;
    root.present().map_err(msg)
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plans: &[PanelPlan],
    fig: &Figure,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(msg)?;
    let rows = plans.len().div_ceil(fig.columns);
    let areas = root.split_evenly((rows, fig.columns));
    for (plan, area) in plans.iter().zip(areas.iter()) {
        match plan {
            PanelPlan::Line(p) => draw_line_panel(area, p)?,
            PanelPlan::Heat(p) => draw_heat_panel(area, p)?,
        }
    }
    Ok(())
}

/// Any plotters error as a message.
fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn font(size: f64) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

// ---------------------------------------------------------------------------------------------
// Numbers as text
// ---------------------------------------------------------------------------------------------

/// Short scientific notation, as heatmap cells are annotated: two significant digits, a
/// trailing `.0` dropped (`1.3e-4`, `2e0`, `-5.1e2`), `0`, `inf`, `-inf`; empty for NaN.
pub fn format_sci(v: f64) -> String {
    if v.is_nan() {
        return String::new();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{v:.1e}");
    // `2.0e0` → `2e0`: the trailing `.0` of the mantissa carries nothing.
    s.replacen(".0e", "e", 1)
}

/// Axis tick text: plain decimals (≤ 4 significant digits) between 1e-3 and 1e5, else
/// [`format_sci`].
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format_sci(v);
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
