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

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

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

// ---------------------------------------------------------------------------------------------
// Line charts
// ---------------------------------------------------------------------------------------------

/// Ten distinct colours (the Tableau 10 palette); series 10… reuse them with other markers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
}

impl Marker {
    /// Series `i`: colour `i mod 10`, marker `⌊i / 10⌋ mod 4`.
    fn of(i: usize) -> Marker {
        [
            Marker::Circle,
            Marker::Triangle,
            Marker::Square,
            Marker::Diamond,
        ][(i / PALETTE.len()) % 4]
    }

    /// The marker's outline in pixels around its point. Every marker is a filled polygon (the
    /// circle a 12-gon), so that points and legend samples share one element type.
    fn vertices(self) -> Vec<(i32, i32)> {
        match self {
            Marker::Circle => (0..12)
                .map(|i| {
                    let a = f64::from(i) * std::f64::consts::PI / 6.0;
                    (
                        (4.5 * a.cos()).round() as i32,
                        (4.5 * a.sin()).round() as i32,
                    )
                })
                .collect(),
            Marker::Triangle => vec![(0, -6), (5, 4), (-5, 4)],
            Marker::Square => vec![(-4, -4), (4, -4), (4, 4), (-4, 4)],
            Marker::Diamond => vec![(0, -6), (5, 0), (0, 6), (-5, 0)],
        }
    }
}

/// One axis after validation: scale and the drawn range (padded, in data units).
#[derive(Clone, Copy, Debug, PartialEq)]
struct AxisPlan {
    log: bool,
    lo: f64,
    hi: f64,
    /// All drawn values are integers (then ticks are placed on integers where possible).
    integer: bool,
}

struct LinePlan<'a> {
    chart: &'a LineChart,
    x: AxisPlan,
    y: AxisPlan,
    /// Drawable points of each series, in order.
    points: Vec<Vec<(f64, f64)>>,
}

/// Whether `scale` is logarithmic for these values (see [`Scale::Auto`]).
fn resolve_log(scale: Scale, values: impl Iterator<Item = f64>) -> bool {
    match scale {
        Scale::Linear => false,
        Scale::Log => true,
        Scale::Auto => {
            let (lo, hi) = values
                .filter(|v| v.is_finite() && *v > 0.0)
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            hi > 0.0 && hi / lo > 100.0
        }
    }
}

fn plan_line(chart: &LineChart) -> Result<LinePlan<'_>, Invalid> {
    if chart.series.is_empty() {
        return Err(Invalid::NoSeries);
    }
    let finite = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let x_log = resolve_log(chart.x_scale, finite().map(|p| p.0));
    let y_log = resolve_log(chart.y_scale, finite().map(|p| p.1));
    let keep = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (!x_log || x > 0.0) && (!y_log || y > 0.0)
    };
    let points: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| s.points.iter().copied().filter(keep).collect())
        .collect();
    let all: Vec<(f64, f64)> = points.iter().flatten().copied().collect();
    if all.is_empty() {
        return Err(Invalid::NoPoints);
    }
    Ok(LinePlan {
        chart,
        x: axis_plan(x_log, all.iter().map(|p| p.0)),
        y: axis_plan(y_log, all.iter().map(|p| p.1)),
        points,
    })
}

/// The drawn range of an axis: the data range padded by 5 % (in log space on a log axis); a
/// log range always contains a power of ten so that it has at least one labelled tick.
fn axis_plan(log: bool, values: impl Iterator<Item = f64> + Clone) -> AxisPlan {
    let integer = values.clone().all(|v| v.fract() == 0.0);
    let t = |v: f64| if log { v.log10() } else { v };
    let (lo, hi) = values
        .map(t)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.05 * span
    } else if log {
        0.25
    } else {
        (0.1 * lo.abs()).max(0.5)
    };
    let (mut lo, hi) = (lo - pad, hi + pad);
    if log {
        if hi.floor() < lo {
            lo = lo.floor();
        }
        return AxisPlan {
            log,
            lo: 10f64.powf(lo),
            hi: 10f64.powf(hi),
            integer,
        };
    }
    AxisPlan {
        log,
        lo,
        hi,
        integer,
    }
}

impl AxisPlan {
    /// How many tick labels to ask plotters for.
    fn label_count(&self) -> usize {
        if self.integer && !self.log {
            ((self.hi - self.lo).floor() as usize + 1).clamp(2, 12)
        } else {
            8
        }
    }

    /// Tick text: on a log axis reaching below 1e-3 or above 1e5, every tick in scientific
    /// notation (so that `1e-4` does not sit next to `0.001`), else [`format_tick`].
    fn tick(&self, v: f64) -> String {
        if self.log && (self.lo < 1e-3 || self.hi >= 1e5) {
            format_sci(v)
        } else {
            format_tick(v)
        }
    }

    /// Position of `v` in the drawn range, 0 at `lo` and 1 at `hi`.
    fn unit(&self, v: f64) -> f64 {
        let t = |v: f64| if self.log { v.log10() } else { v };
        (t(v) - t(self.lo)) / (t(self.hi) - t(self.lo))
    }
}

fn draw_line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &LinePlan,
) -> Result<(), String> {
    let (x, y) = (plan.x, plan.y);
    let legend = place_legend(area, plan)?;
    let lin = |a: AxisPlan| a.lo..a.hi;
    let log = |a: AxisPlan| (a.lo..a.hi).log_scale();
    match (x.log, y.log) {
        (false, false) => draw_line_in(area, plan, &legend, lin(x), lin(y)),
        (false, true) => draw_line_in(area, plan, &legend, lin(x), log(y)),
        (true, false) => draw_line_in(area, plan, &legend, log(x), lin(y)),
        (true, true) => draw_line_in(area, plan, &legend, log(x), log(y)),
    }
}

/// Draws a line chart on ranges of any kind (linear or logarithmic) on either axis.
fn draw_line_in<DB, XR, YR>(
    area: &DrawingArea<DB, Shift>,
    plan: &LinePlan,
    legend: &Legend,
    x_range: XR,
    y_range: YR,
) -> Result<(), String>
where
    DB: DrawingBackend,
    XR: AsRangedCoord<Value = f64>,
    YR: AsRangedCoord<Value = f64>,
    XR::CoordDescType: ValueFormatter<f64>,
    YR::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&plan.chart.title, font(18.0))
        .margin(CHART_MARGIN)
        .margin_right(CHART_MARGIN + legend.reserved_width())
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_range, y_range)
        .map_err(msg)?;
    let (fmt_x, fmt_y) = (|v: &f64| plan.x.tick(*v), |v: &f64| plan.y.tick(*v));
    chart
        .configure_mesh()
        .x_desc(plan.chart.x_label.as_str())
        .y_desc(plan.chart.y_label.as_str())
        .x_labels(plan.x.label_count())
        .y_labels(plan.y.label_count())
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .label_style(font(12.0))
        .axis_desc_style(font(14.0))
        .light_line_style(RGBColor(0, 0, 0).mix(0.05))
        .bold_line_style(RGBColor(0, 0, 0).mix(0.15))
        .draw()
        .map_err(msg)?;
    for (i, pts) in plan.points.iter().enumerate() {
        draw_series(&mut chart, i, pts)?;
    }
    // The plot's box in the panel's pixels.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (bx, by) = area.get_base_pixel();
    let plot = (xs.start - bx, ys.start - by, xs.end - bx, ys.end - by);
    draw_legend(area, legend, plot)
}

/// A series' legend text; a series none of whose points can be drawn says so.
/// A series' legend text. It says so when no point can be drawn, or when finite points were
/// left out because they are `≤ 0` on a logarithmic axis (non-finite points are taken as
/// missing and left out silently).
fn legend_label(series: &Series, pts: &[(f64, f64)]) -> String {
    let finite = series
        .points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .count();
    let dropped = finite - pts.len();
    match (pts.len(), dropped) {
        (0, _) => format!("{} (no drawable points)", series.label),
        (_, 0) => series.label.clone(),
        (_, 1) => format!("{} (1 point ≤ 0 not shown)", series.label),
        (_, n) => format!("{} ({n} points ≤ 0 not shown)", series.label),
    }
}

/// Draws one series: a line through its points (when there are two or more) and a marker on
/// each point.
fn draw_series<DB, X, Y>(
    chart: &mut ChartContext<DB, Cartesian2d<X, Y>>,
    index: usize,
    pts: &[(f64, f64)],
) -> Result<(), String>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let color = PALETTE[index % PALETTE.len()];
    let marker = Marker::of(index);
    if pts.len() > 1 {
        let line = LineSeries::new(pts.iter().copied(), color.stroke_width(2));
        chart.draw_series(line).map_err(msg)?;
    }
    let fill = color.filled();
    let shape = marker.vertices();
    let dots = pts
        .iter()
        .map(|&p| EmptyElement::at(p) + Polygon::new(shape.clone(), fill));
    chart.draw_series(dots).map_err(msg)?;
    Ok(())
}

const CHART_MARGIN: u32 = 10;
const X_LABEL_AREA: u32 = 42;
const Y_LABEL_AREA: u32 = 70;
/// Height taken by an 18 px caption (text and the gap below it), as plotters lays it out.
const CAPTION_H: u32 = 28;
const LEGEND_SAMPLE: u32 = 28;
const LEGEND_MARGIN: u32 = 6;
const LEGEND_FONT: f64 = 12.0;
/// Gap between the plot and a legend drawn outside it, on its right.
const LEGEND_GAP: i32 = 10;

/// A line chart's legend: its entries, its size and where it goes.
struct Legend {
    labels: Vec<String>,
    /// Box size in pixels.
    size: (u32, u32),
    /// Distance between the centres of two entries.
    pitch: f64,
    /// Inside the plot at this position, or (`None`) to the right of the plot.
    inside: Option<SeriesLabelPosition>,
}

impl Legend {
    /// Width the plot gives up for a legend drawn on its right.
    fn reserved_width(&self) -> u32 {
        match self.inside {
            Some(_) => 0,
            None => self.size.0 + LEGEND_GAP as u32,
        }
    }
}

/// Measures the legend and chooses its place: inside the plot where its box hides the fewest
/// data points and line samples, or, when every inside place hides some and the legend is
/// narrow enough (at most 35 % of the panel), outside on the right.
fn place_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &LinePlan,
) -> Result<Legend, String> {
    let labels: Vec<String> = plan
        .chart
        .series
        .iter()
        .zip(&plan.points)
        .map(|(series, pts)| legend_label(series, pts))
        .collect();
    let (mut text_w, mut text_h) = (0, 0);
    for label in &labels {
        let (w, h) = area
            .estimate_text_size(label, &font(LEGEND_FONT))
            .map_err(msg)?;
        (text_w, text_h) = (text_w.max(w), text_h.max(h));
    }
    let pitch = (f64::from(text_h) * 1.25).max(15.0);
    let legend_w = text_w + LEGEND_SAMPLE + 3 * LEGEND_MARGIN;
    let legend_h = (labels.len() as f64 * pitch).ceil() as u32 + 2 * LEGEND_MARGIN;
    let (w, h) = area.dim_in_pixel();
    let plot = (
        w.saturating_sub(2 * CHART_MARGIN + Y_LABEL_AREA),
        h.saturating_sub(2 * CHART_MARGIN + X_LABEL_AREA + CAPTION_H),
    );
    let samples = plot_samples(plan);
    let hidden = |pos: &SeriesLabelPosition| {
        let (x0, y0) = legend_origin(pos, (legend_w, legend_h), plot);
        let (x1, y1) = (x0 + f64::from(legend_w), y0 + f64::from(legend_h));
        let pad = 6.0; // a marker's radius, and some air
        let (pw, ph) = (f64::from(plot.0), f64::from(plot.1));
        samples
            .iter()
            .map(|&(u, v)| (u * pw, (1.0 - v) * ph))
            .filter(|&(px, py)| px > x0 - pad && px < x1 + pad && py > y0 - pad && py < y1 + pad)
            .count()
    };
    use SeriesLabelPosition::*;
    let candidates = [
        UpperRight,
        UpperLeft,
        LowerRight,
        LowerLeft,
        MiddleRight,
        MiddleLeft,
        UpperMiddle,
        LowerMiddle,
    ];
    let (best, count) = candidates
        .into_iter()
        .map(|p| {
            let c = hidden(&p);
            (p, c)
        })
        .min_by_key(|(_, c)| *c)
        .unwrap_or((UpperRight, 0));
    let outside = count > 0 && legend_w * 100 <= w * 35;
    Ok(Legend {
        labels,
        size: (legend_w, legend_h),
        pitch,
        inside: (!outside).then_some(best),
    })
}

/// Draws the legend box on the panel; `plot` is the plot's box `(x0, y0, x1, y1)` in the
/// panel's pixels. Each entry: a short line with the series' marker, then the label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    legend: &Legend,
    plot: (i32, i32, i32, i32),
) -> Result<(), String> {
    let (w, h) = legend.size;
    let (x0, y0) = match &legend.inside {
        Some(pos) => {
            let dims = ((plot.2 - plot.0) as u32, (plot.3 - plot.1) as u32);
            let (x, y) = legend_origin(pos, (w, h), dims);
            (plot.0 + x.round() as i32, plot.1 + y.round() as i32)
        }
        None => (plot.2 + LEGEND_GAP, plot.1),
    };
    let rect = [(x0, y0), (x0 + w as i32, y0 + h as i32)];
    area.draw(&Rectangle::new(rect, WHITE.mix(0.85).filled()))
        .map_err(msg)?;
    area.draw(&Rectangle::new(rect, BLACK.mix(0.5)))
        .map_err(msg)?;
    let m = LEGEND_MARGIN as i32;
    let text = font(LEGEND_FONT).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, label) in legend.labels.iter().enumerate() {
        let y = y0 + m + ((i as f64 + 0.5) * legend.pitch).round() as i32;
        let x = x0 + m;
        let color = PALETTE[i % PALETTE.len()];
        let line = PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2));
        area.draw(&line).map_err(msg)?;
        let shape = Marker::of(i).vertices();
        let marker: Vec<_> = shape
            .iter()
            .map(|&(dx, dy)| (x + 11 + dx, y + dy))
            .collect();
        area.draw(&Polygon::new(marker, color.filled()))
            .map_err(msg)?;
        let at = (x + LEGEND_SAMPLE as i32 + m / 2, y);
        area.draw(&Text::new(label.as_str(), at, text.clone()))
            .map_err(msg)?;
    }
    Ok(())
}

/// Top-left corner of the legend box in plot pixels, as plotters places it.
fn legend_origin(
    pos: &SeriesLabelPosition,
    (w, h): (u32, u32),
    (pw, ph): (u32, u32),
) -> (f64, f64) {
    use SeriesLabelPosition::*;
    let (w, h, pw, ph) = (f64::from(w), f64::from(h), f64::from(pw), f64::from(ph));
    let x = match pos {
        UpperLeft | MiddleLeft | LowerLeft => 5.0,
        UpperRight | MiddleRight | LowerRight => pw - w - 5.0,
        _ => (pw - w) / 2.0,
    };
    let y = match pos {
        UpperLeft | UpperMiddle | UpperRight => 5.0,
        LowerLeft | LowerMiddle | LowerRight => ph - h - 5.0,
        _ => (ph - h) / 2.0,
    };
    (x, y)
}

/// Every drawn point and 8 samples along each drawn segment, as fractions of the plot.
fn plot_samples(plan: &LinePlan) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for pts in &plan.points {
        let unit: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(x, y)| (plan.x.unit(x), plan.y.unit(y)))
            .collect();
        out.extend(unit.iter().copied());
        for seg in unit.windows(2) {
            let ((a, b), (c, d)) = (seg[0], seg[1]);
            out.extend((1..=8).map(|i| {
                let t = f64::from(i) / 9.0;
                (a + (c - a) * t, b + (d - b) * t)
            }));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Heatmaps
// ---------------------------------------------------------------------------------------------

struct HeatPlan<'a> {
    map: &'a Heatmap,
    rows: usize,
    cols: usize,
    row_labels: Vec<String>,
    col_labels: Vec<String>,
    /// The colour coordinate of each cell (`log10` of the value when `log_color`); `None` for
    /// a blank cell.
    t: Vec<Vec<Option<f64>>>,
    /// Smallest and largest colour coordinate, `None` when every cell is blank.
    t_range: Option<(f64, f64)>,
}

fn plan_heat(map: &Heatmap) -> Result<HeatPlan<'_>, Invalid> {
    let rows = map.values.len();
    let cols = map.values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(Invalid::Heat("no cells (values is empty)".into()));
    }
    if let Some(r) = map.values.iter().position(|row| row.len() != cols) {
        let n = map.values[r].len();
        return Err(Invalid::Heat(format!(
            "row {r} has {n} values, row 0 has {cols}"
        )));
    }
    let row_labels = labels_or_indices(&map.row_labels, rows, "row_labels")?;
    let col_labels = labels_or_indices(&map.col_labels, cols, "col_labels")?;
    if let Some(&(r, c)) = map.marked.iter().find(|&&(r, c)| r >= rows || c >= cols) {
        return Err(Invalid::Heat(format!(
            "marked cell ({r}, {c}) is outside the {rows}×{cols} grid"
        )));
    }
    let colour_of = |v: f64| {
        let t = if map.log_color { v.log10() } else { v };
        t.is_finite().then_some(t)
    };
    let t: Vec<Vec<Option<f64>>> = map
        .values
        .iter()
        .map(|row| row.iter().map(|&v| colour_of(v)).collect())
        .collect();
    let t_range = t
        .iter()
        .flatten()
        .flatten()
        .fold(None, |acc, &v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        });
    Ok(HeatPlan {
        map,
        rows,
        cols,
        row_labels,
        col_labels,
        t,
        t_range,
    })
}

fn labels_or_indices(labels: &[String], n: usize, what: &str) -> Result<Vec<String>, Invalid> {
    match labels.len() {
        0 => Ok((0..n).map(|i| i.to_string()).collect()),
        len if len == n => Ok(labels.to_vec()),
        len => Err(Invalid::Heat(format!(
            "{what} has {len} entries for {n} cells"
        ))),
    }
}

impl HeatPlan<'_> {
    /// Viridis colour of colour coordinate `t`.
    fn color(&self, t: f64) -> RGBColor {
        let u = match self.t_range {
            Some((lo, hi)) if hi > lo => ((t - lo) / (hi - lo)).clamp(0.0, 1.0),
            _ => 0.5,
        };
        viridis(u)
    }

    /// The value shown for colour coordinate `t` on the colour bar.
    fn value_of(&self, t: f64) -> f64 {
        if self.map.log_color {
            10f64.powf(t)
        } else {
            t
        }
    }
}

/// Matplotlib's viridis colormap at `u ∈ [0, 1]`: linear interpolation between its colours at
/// 0, 0.1, …, 1.
fn viridis(u: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 11] = [
        (68, 1, 84),
        (72, 36, 117),
        (65, 68, 135),
        (53, 95, 141),
        (42, 120, 142),
        (33, 145, 140),
        (34, 168, 132),
        (68, 191, 112),
        (122, 209, 81),
        (189, 223, 38),
        (253, 231, 37),
    ];
    let x = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    } * 10.0;
    let i = (x.floor() as usize).min(9);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: u8, q: u8| (f64::from(p) + (f64::from(q) - f64::from(p)) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Black or white, whichever reads better on `bg`.
fn text_color_on(bg: RGBColor) -> RGBColor {
    let luma = 0.299 * f64::from(bg.0) + 0.587 * f64::from(bg.1) + 0.114 * f64::from(bg.2);
    if luma > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// Pixel boxes of a heatmap panel.
struct HeatLayout {
    /// Grid corners `(x0, y0, x1, y1)`.
    grid: (i32, i32, i32, i32),
    /// Colour bar corners `(x0, y0, x1, y1)`.
    bar: (i32, i32, i32, i32),
    /// Left edge of the row labels.
    row_label_x: i32,
}

const MARGIN: i32 = 10;
const TITLE_H: i32 = 30;
const AXIS_TITLE: i32 = 22;
const LABEL_FONT: f64 = 12.0;

fn draw_heat_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
) -> Result<(), String> {
    let layout = heat_layout(area, plan)?;
    let (w, _) = area.dim_in_pixel();
    let title = font(18.0).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(
        plan.map.title.as_str(),
        (w as i32 / 2, MARGIN + TITLE_H / 2),
        title,
    ))
    .map_err(msg)?;
    draw_heat_cells(area, plan, &layout)?;
    draw_heat_marks(area, plan, &layout)?;
    draw_heat_labels(area, plan, &layout)?;
    draw_colorbar(area, plan, &layout)
}

fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    size: f64,
) -> Result<i32, String> {
    let (w, _) = area.estimate_text_size(text, &font(size)).map_err(msg)?;
    Ok(w as i32)
}

fn heat_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
) -> Result<HeatLayout, String> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let row_title_w = if plan.map.row_title.is_empty() {
        0
    } else {
        AXIS_TITLE
    };
    let col_title_h = if plan.map.col_title.is_empty() {
        0
    } else {
        AXIS_TITLE
    };
    let mut label_w = 0;
    for l in &plan.row_labels {
        label_w = label_w.max(text_width(area, l, LABEL_FONT)?);
    }
    let label_w = (label_w + 8).min(w * 3 / 10);
    let mut tick_w = 0;
    for t in colorbar_ticks(plan) {
        tick_w = tick_w.max(text_width(area, &format_sci(plan.value_of(t)), 11.0)?);
    }
    let bar_w = if plan.t_range.is_some() {
        12 + 14 + 4 + tick_w
    } else {
        0
    };
    let x0 = MARGIN + row_title_w + label_w;
    let x1 = w - MARGIN - bar_w;
    let y0 = MARGIN + TITLE_H;
    let y1 = h - MARGIN - col_title_h - (LABEL_FONT as i32 + 10);
    if x1 - x0 < plan.cols as i32 * 4 || y1 - y0 < plan.rows as i32 * 4 {
        return Err(format!(
            "the panel ({w}×{h} pixels) is too small for a {}×{} heatmap",
            plan.rows, plan.cols
        ));
    }
    Ok(HeatLayout {
        grid: (x0, y0, x1, y1),
        bar: (x1 + 12, y0, x1 + 26, y1),
        row_label_x: MARGIN + row_title_w,
    })
}

impl HeatLayout {
    /// Pixel box `(x0, y0, x1, y1)` of cell `(r, c)`; neighbouring cells share edges.
    fn cell(&self, plan: &HeatPlan, r: usize, c: usize) -> (i32, i32, i32, i32) {
        let (x0, y0, x1, y1) = self.grid;
        let edge = |a: i32, b: i32, i: usize, n: usize| a + ((b - a) as usize * i / n) as i32;
        (
            edge(x0, x1, c, plan.cols),
            edge(y0, y1, r, plan.rows),
            edge(x0, x1, c + 1, plan.cols),
            edge(y0, y1, r + 1, plan.rows),
        )
    }
}

fn draw_heat_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
    layout: &HeatLayout,
) -> Result<(), String> {
    let grid_line = RGBColor(200, 200, 200);
    for r in 0..plan.rows {
        for c in 0..plan.cols {
            let (x0, y0, x1, y1) = layout.cell(plan, r, c);
            let bg = plan.t[r][c].map_or(WHITE, |t| plan.color(t));
            area.draw(&Rectangle::new([(x0, y0), (x1, y1)], bg.filled()))
                .map_err(msg)?;
            if plan.t[r][c].is_none() {
                area.draw(&Rectangle::new([(x0, y0), (x1, y1)], grid_line))
                    .map_err(msg)?;
            }
            let text = format_sci(plan.map.values[r][c]);
            if text.is_empty() {
                continue;
            }
            let (cw, ch) = (x1 - x0, y1 - y0);
            let mut size = (f64::from(ch) * 0.45).min(LABEL_FONT);
            let tw = text_width(area, &text, size)?;
            if tw > cw - 4 && tw > 0 {
                size *= f64::from(cw - 4) / f64::from(tw);
            }
            if size < 7.0 {
                continue; // too small to read: the colour alone tells
            }
            let fg = text_color_on(bg);
            let style = font(size)
                .color(&fg)
                .pos(Pos::new(HPos::Center, VPos::Center));
            area.draw(&Text::new(text, ((x0 + x1) / 2, (y0 + y1) / 2), style))
                .map_err(msg)?;
        }
    }
    Ok(())
}

/// A thick red border (3 px, inside the cell) around every marked cell.
fn draw_heat_marks<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
    layout: &HeatLayout,
) -> Result<(), String> {
    let red = RGBColor(228, 26, 28);
    for &(r, c) in &plan.map.marked {
        let (x0, y0, x1, y1) = layout.cell(plan, r, c);
        for k in 0..3 {
            let rect = [(x0 + k, y0 + k), (x1 - 1 - k, y1 - 1 - k)];
            area.draw(&Rectangle::new(rect, red)).map_err(msg)?;
        }
    }
    Ok(())
}

/// `text` cut to fit `max_w` pixels, ending in `…` when cut.
fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    size: f64,
    max_w: i32,
) -> Result<String, String> {
    if text_width(area, text, size)? <= max_w {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let cut: String = chars[..n].iter().chain(['…'].iter()).collect();
        if n == 0 || text_width(area, &cut, size)? <= max_w {
            return Ok(cut);
        }
    }
    Ok(String::new())
}

fn draw_heat_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
    layout: &HeatLayout,
) -> Result<(), String> {
    let (gx0, gy0, gx1, gy1) = layout.grid;
    let right = font(LABEL_FONT).pos(Pos::new(HPos::Right, VPos::Center));
    for (r, label) in plan.row_labels.iter().enumerate() {
        let (_, y0, _, y1) = layout.cell(plan, r, 0);
        let text = fit_text(area, label, LABEL_FONT, gx0 - layout.row_label_x - 6)?;
        area.draw(&Text::new(text, (gx0 - 6, (y0 + y1) / 2), right.clone()))
            .map_err(msg)?;
    }
    let below = font(LABEL_FONT).pos(Pos::new(HPos::Center, VPos::Top));
    for (c, label) in plan.col_labels.iter().enumerate() {
        let (x0, _, x1, _) = layout.cell(plan, 0, c);
        let text = fit_text(area, label, LABEL_FONT, x1 - x0 - 2)?;
        area.draw(&Text::new(text, ((x0 + x1) / 2, gy1 + 5), below.clone()))
            .map_err(msg)?;
    }
    let axis = font(14.0).pos(Pos::new(HPos::Center, VPos::Center));
    if !plan.map.col_title.is_empty() {
        let at = (
            (gx0 + gx1) / 2,
            gy1 + LABEL_FONT as i32 + 10 + AXIS_TITLE / 2,
        );
        area.draw(&Text::new(plan.map.col_title.as_str(), at, axis.clone()))
            .map_err(msg)?;
    }
    if !plan.map.row_title.is_empty() {
        let at = (MARGIN + AXIS_TITLE / 2, (gy0 + gy1) / 2);
        let style = axis.transform(FontTransform::Rotate270);
        area.draw(&Text::new(plan.map.row_title.as_str(), at, style))
            .map_err(msg)?;
    }
    Ok(())
}

/// Colour coordinates labelled on the colour bar: the extremes and the middle.
fn colorbar_ticks(plan: &HeatPlan) -> Vec<f64> {
    match plan.t_range {
        None => vec![],
        Some((lo, hi)) if hi > lo => vec![hi, (lo + hi) / 2.0, lo],
        Some((lo, _)) => vec![lo],
    }
}

fn draw_colorbar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &HeatPlan,
    layout: &HeatLayout,
) -> Result<(), String> {
    let Some((lo, hi)) = plan.t_range else {
        return Ok(());
    };
    let (x0, y0, x1, y1) = layout.bar;
    const STEPS: i32 = 64;
    for i in 0..STEPS {
        // Step 0 is the top of the bar, the largest value.
        let (a, b) = (y0 + (y1 - y0) * i / STEPS, y0 + (y1 - y0) * (i + 1) / STEPS);
        let t = hi - (hi - lo) * (f64::from(i) + 0.5) / f64::from(STEPS);
        area.draw(&Rectangle::new([(x0, a), (x1, b)], plan.color(t).filled()))
            .map_err(msg)?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.mix(0.5)))
        .map_err(msg)?;
    let style = font(11.0).pos(Pos::new(HPos::Left, VPos::Center));
    for t in colorbar_ticks(plan) {
        let u = if hi > lo { (hi - t) / (hi - lo) } else { 0.5 };
        let y = y0 + (f64::from(y1 - y0) * u).round() as i32;
        let text = format_sci(plan.value_of(t));
        area.draw(&Text::new(text, (x1 + 4, y), style.clone()))
            .map_err(msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        assert!(bytes.len() > 33, "PNG too short: {} bytes", bytes.len());
        assert_eq!(bytes[..8], SIGNATURE, "not a PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        (be(16), be(20))
    }

    /// Whether the SVG draws exactly `text` as one text element.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    fn three_series() -> LineChart {
        let mut chart = LineChart::new("Error vs examples", "k (examples)", "MSE");
        let k = |f: fn(f64) -> f64| (0..=8).map(|k| (f64::from(k), f(f64::from(k)))).collect();
        chart.series = vec![
            Series::new("ridge", k(|k| 1.0 / (1.0 + k))),
            Series::new("compiled <exact> & co", k(|k| 0.9_f64.powf(k))),
            Series::new("trained", k(|k| 0.5 + 0.02 * k)),
        ];
        chart
    }

    fn heatmap() -> Heatmap {
        Heatmap {
            title: "Probe error".into(),
            row_labels: vec!["layer 0".into(), "layer 1".into()],
            col_labels: vec!["k=1".into(), "k=2".into(), "k=3".into()],
            row_title: "layer".into(),
            col_title: "examples".into(),
            values: vec![vec![1.3e-4, 3.0, f64::NAN], vec![0.5, 2.0e-6, 7.0]],
            marked: vec![(1, 1), (0, 0)],
            log_color: true,
        }
    }

    #[test]
    fn line_chart_writes_png_and_svg_with_title_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let chart = three_series();
        let paths = write_line_chart(&chart, &dir.path().join("sub/dir/chart")).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(paths[0].ends_with("sub/dir/chart.png"), "{paths:?}");
        assert!(paths[1].ends_with("sub/dir/chart.svg"), "{paths:?}");
        let png = fs::read(&paths[0]).unwrap();
        assert_eq!(png_size(&png), Figure::DEFAULT_PANEL_SIZE);
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("Error vs examples"));
        assert!(svg.contains("k (examples)") && svg.contains("MSE"));
        assert!(svg.contains("ridge"));
        assert!(
            svg.contains("compiled &lt;exact&gt; &amp; co"),
            "label not escaped"
        );
        assert!(svg.contains("trained"));
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(dir.path().join("sub/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn auto_scale_is_log_for_wide_positive_data_and_linear_otherwise() {
        let wide = [1e-6, 1e-4, 1e-1];
        assert!(resolve_log(Scale::Auto, wide.iter().copied()));
        let narrow = [0.1, 0.5, 0.9];
        assert!(!resolve_log(Scale::Auto, narrow.iter().copied()));
        // Exactly two decades is not more than two.
        assert!(!resolve_log(Scale::Auto, [1e-3, 1e-1].iter().copied()));
        // Non-positive and non-finite values do not count.
        let mixed = [-5.0, 0.0, f64::NAN, f64::INFINITY, 0.2, 0.3];
        assert!(!resolve_log(Scale::Auto, mixed.iter().copied()));
        assert!(resolve_log(Scale::Log, narrow.iter().copied()));
        assert!(!resolve_log(Scale::Linear, wide.iter().copied()));

        let mut chart = LineChart::new("t", "x", "y");
        chart.series = vec![Series::new(
            "a",
            vec![(0.0, 1e-6), (1.0, 1e-3), (2.0, 1e-1)],
        )];
        let plan = plan_line(&chart).ok().unwrap();
        assert!(plan.y.log && !plan.x.log);
        assert!(plan.y.lo > 0.0 && plan.y.lo < 1e-6 && plan.y.hi > 1e-1);
        chart.series = vec![Series::new("a", vec![(0.0, 0.1), (1.0, 0.9)])];
        let plan = plan_line(&chart).ok().unwrap();
        assert!(!plan.y.log && !plan.x.log);
    }

    #[test]
    fn non_finite_points_are_skipped_and_all_non_finite_is_an_error() {
        let mut chart = LineChart::new("skip", "x", "y");
        chart.y_scale = Scale::Log;
        chart.series = vec![
            Series::new(
                "a",
                vec![
                    (0.0, f64::NAN),
                    (1.0, 0.5),
                    (f64::INFINITY, 1.0),
                    (2.0, 0.0),
                ],
            ),
            Series::new("b", vec![(0.0, -1.0)]),
        ];
        let plan = plan_line(&chart).ok().unwrap();
        assert_eq!(plan.points, vec![vec![(1.0, 0.5)], vec![]]);
        let dir = tempfile::tempdir().unwrap();
        let paths = write_line_chart(&chart, &dir.path().join("skip")).unwrap();
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(
            has_text(&svg, "b (no drawable points)"),
            "empty series lost its legend entry"
        );
        assert!(
            has_text(&svg, "a (1 point ≤ 0 not shown)"),
            "dropped point not reported"
        );

        let mut bad = LineChart::new("nothing", "x", "y");
        bad.series = vec![
            Series::new("a", vec![(f64::NAN, 1.0), (0.0, f64::INFINITY)]),
            Series::new("b", vec![]),
        ];
        let stem = dir.path().join("bad");
        let err = write_line_chart(&bad, &stem).unwrap_err();
        assert!(
            matches!(err, PlotError::NoFinitePoints { panel: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad.{png,svg}"), "{err}");
        bad.series.clear();
        let err = write_line_chart(&bad, &stem).unwrap_err();
        assert!(matches!(err, PlotError::NoSeries { .. }), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(
            left.len(),
            2,
            "only the two `skip` files may exist: {left:?}"
        );
    }

    #[test]
    fn heatmap_writes_both_files_with_annotated_values() {
        let dir = tempfile::tempdir().unwrap();
        let fig = Figure::new(vec![Panel::Heat(heatmap())], 1);
        let paths = write_figure(&fig, &dir.path().join("heat")).unwrap();
        let png = fs::read(&paths[0]).unwrap();
        assert_eq!(png_size(&png), Figure::DEFAULT_PANEL_SIZE);
        let svg = fs::read_to_string(&paths[1]).unwrap();
        for text in [
            "1.3e-4",
            "3e0",
            "5e-1",
            "2e-6",
            "7e0",
            "Probe error",
            "layer 1",
            "k=3",
        ] {
            assert!(has_text(&svg, text), "SVG lacks the text {text:?}");
        }
        assert!(!svg.contains("NaN"), "a NaN cell must be blank");
        // Each marked cell's border: three nested red rectangles.
        let red = svg.matches(r##"stroke="#E41A1C""##).count();
        assert_eq!(red, 3 * 2, "marked borders");
    }

    #[test]
    fn bad_heatmaps_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("h");
        let cases: Vec<fn(&mut Heatmap)> = vec![
            |h| h.values.clear(),
            |h| {
                h.values[1].pop();
            },
            |h| h.row_labels.push("extra".into()),
            |h| h.marked.push((0, 3)),
        ];
        for (i, edit) in cases.into_iter().enumerate() {
            let mut h = heatmap();
            edit(&mut h);
            let err = write_figure(&Figure::new(vec![Panel::Heat(h)], 1), &stem).unwrap_err();
            assert!(
                matches!(err, PlotError::BadHeatmap { .. }),
                "case {i}: {err}"
            );
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn same_input_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fig = Figure::new(vec![Panel::Line(three_series()), Panel::Heat(heatmap())], 2);
        let a = write_figure(&fig, &dir.path().join("a")).unwrap();
        let b = write_figure(&fig, &dir.path().join("b")).unwrap();
        for (pa, pb) in a.iter().zip(&b) {
            let (ba, bb) = (fs::read(pa).unwrap(), fs::read(pb).unwrap());
            assert!(!ba.is_empty());
            assert!(ba == bb, "{} and {} differ", pa.display(), pb.display());
        }
        // Rewriting the same stem replaces the files with the same bytes.
        let again = write_figure(&fig, &dir.path().join("a")).unwrap();
        assert_eq!(fs::read(&again[0]).unwrap(), fs::read(&b[0]).unwrap());
    }

    #[test]
    fn multi_panel_figure_has_grid_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut log_chart = three_series();
        log_chart.title = "second".into();
        log_chart.y_scale = Scale::Log;
        let fig = Figure {
            panels: vec![
                Panel::Line(three_series()),
                Panel::Line(log_chart),
                Panel::Heat(heatmap()),
            ],
            columns: 2,
            panel_size: (400, 300),
        };
        let paths = write_figure(&fig, &dir.path().join("grid")).unwrap();
        assert_eq!(png_size(&fs::read(&paths[0]).unwrap()), (800, 600));
        let svg = fs::read_to_string(&paths[1]).unwrap();
        assert!(svg.contains(r#"width="800""#) && svg.contains(r#"height="600""#));
        assert!(svg.contains("second") && svg.contains("Probe error"));
    }

    #[test]
    fn layout_errors_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("x");
        let mut fig = Figure::new(vec![Panel::Line(three_series())], 0);
        assert!(matches!(
            write_figure(&fig, &stem),
            Err(PlotError::Layout { .. })
        ));
        fig.columns = 1;
        fig.panel_size = (100_000, 100_000);
        assert!(matches!(
            write_figure(&fig, &stem),
            Err(PlotError::Layout { .. })
        ));
        let empty = Figure::new(vec![], 1);
        assert!(matches!(
            write_figure(&empty, &stem),
            Err(PlotError::Layout { .. })
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn single_point_series_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let mut chart = LineChart::new("one", "k", "v");
        chart.series = vec![Series::new("lonely", vec![(3.0, 2.0)])];
        let plan = plan_line(&chart).ok().unwrap();
        assert!(plan.x.lo < 3.0 && plan.x.hi > 3.0 && plan.y.lo < 2.0 && plan.y.hi > 2.0);
        let paths = write_line_chart(&chart, &dir.path().join("one")).unwrap();
        let svg = fs::read_to_string(&paths[1]).unwrap();
        // The marker: a filled polygon in the first palette colour, once on the point and
        // once in the legend.
        let markers = svg
            .lines()
            .filter(|l| l.starts_with("<polygon") && l.contains(r##"fill="#1F77B4""##))
            .count();
        assert_eq!(markers, 2, "the marker or its legend sample is missing");
        assert!(svg.contains("lonely"));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_sci(1.24e-4), "1.2e-4");
        assert_eq!(format_sci(1.3e-4), "1.3e-4");
        assert_eq!(format_sci(2.0), "2e0");
        assert_eq!(format_sci(-510.0), "-5.1e2");
        assert_eq!(format_sci(0.0), "0");
        assert_eq!(format_sci(f64::NAN), "");
        assert_eq!(format_sci(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_tick(3.0), "3");
        assert_eq!(format_tick(0.30000000000000004), "0.3");
        assert_eq!(format_tick(1e-5), "1e-5");
        assert_eq!(format_tick(0.0025), "0.0025");
        assert_eq!(format_tick(12345.0), "12345");
        assert_eq!(format_tick(2e6), "2e6");
    }

    #[test]
    fn palette_and_markers_cycle() {
        assert_eq!(Marker::of(0), Marker::Circle);
        assert_eq!(Marker::of(9), Marker::Circle);
        assert_eq!(Marker::of(10), Marker::Triangle);
        assert_eq!(Marker::of(35), Marker::Diamond);
        assert_eq!(Marker::of(40), Marker::Circle);
        let distinct: std::collections::HashSet<_> =
            PALETTE.iter().map(|c| (c.0, c.1, c.2)).collect();
        assert_eq!(distinct.len(), 10);
        assert!(
            ensure_font().is_ok() && ensure_font().is_ok(),
            "registration is idempotent"
        );
    }

    #[test]
    fn awkward_inputs_are_drawn_or_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        // Empty texts, characters outside ASCII, a constant series, tiny panels.
        let mut chart = LineChart::new("", "", "");
        chart.series = vec![
            Series::new("", vec![(1.0, 0.5), (2.0, 0.5)]),
            Series::new("λ → ∞, R² ≥ 0 \"q\" <b>", vec![(1.5, 0.5)]),
        ];
        let mut heat = heatmap();
        heat.title.clear();
        heat.row_title.clear();
        heat.col_labels.clear();
        heat.log_color = false;
        heat.values[0][1] = f64::INFINITY;
        for size in [(64, 64), (200, 120), (640, 420)] {
            let fig = Figure {
                panels: vec![Panel::Line(chart.clone()), Panel::Heat(heat.clone())],
                columns: 1,
                panel_size: size,
            };
            let stem = dir.path().join(format!("awkward-{}", size.0));
            match write_figure(&fig, &stem) {
                Ok(paths) => {
                    let png = fs::read(&paths[0]).unwrap();
                    assert_eq!(png_size(&png), (size.0, 2 * size.1));
                }
                // A heatmap that cannot fit is refused, and nothing is written.
                Err(PlotError::Backend { message, .. }) => {
                    assert!(size.0 < 640, "{size:?}: {message}");
                    assert!(message.contains("too small"), "{message}");
                    assert!(!with_suffix(&stem, "png").exists());
                    assert!(!with_suffix(&stem, "svg").exists());
                }
                Err(e) => panic!("{size:?}: {e}"),
            }
        }
        let svg = fs::read_to_string(dir.path().join("awkward-640.svg")).unwrap();
        assert!(svg.contains("λ → ∞, R² ≥ 0"), "non-ASCII label lost");
        assert!(svg.contains("&lt;b&gt;"), "label not escaped");
        assert!(has_text(&svg, "inf"), "infinite cell not annotated");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
