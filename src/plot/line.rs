//! Line charts: palette and markers, axes (linear or log), series and the legend.

use super::*;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Ten distinct colours (the Tableau 10 palette); series 10… reuse them with other markers.
pub(super) const PALETTE: [RGBColor; 10] = [
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
pub(super) enum Marker {
    Circle,
    Triangle,
    Square,
    Diamond,
}

impl Marker {
    /// Series `i`: colour `i mod 10`, marker `⌊i / 10⌋ mod 4`.
    pub(super) fn of(i: usize) -> Marker {
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
pub(super) struct AxisPlan {
    pub(super) log: bool,
    pub(super) lo: f64,
    pub(super) hi: f64,
    /// All drawn values are integers (then ticks are placed on integers where possible).
    pub(super) integer: bool,
}

pub(super) struct LinePlan<'a> {
    chart: &'a LineChart,
    pub(super) x: AxisPlan,
    pub(super) y: AxisPlan,
    /// Drawable points of each series, in order.
    pub(super) points: Vec<Vec<(f64, f64)>>,
}

/// Whether `scale` is logarithmic for these values (see [`Scale::Auto`]).
pub(super) fn resolve_log(scale: Scale, values: impl Iterator<Item = f64>) -> bool {
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

pub(super) fn plan_line(chart: &LineChart) -> Result<LinePlan<'_>, Invalid> {
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
pub(super) fn axis_plan(log: bool, values: impl Iterator<Item = f64> + Clone) -> AxisPlan {
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

pub(super) fn draw_line_panel<DB: DrawingBackend>(
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
pub(super) fn draw_line_in<DB, XR, YR>(
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
pub(super) fn legend_label(series: &Series, pts: &[(f64, f64)]) -> String {
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
pub(super) fn draw_series<DB, X, Y>(
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

pub(super) const CHART_MARGIN: u32 = 10;
pub(super) const X_LABEL_AREA: u32 = 42;
pub(super) const Y_LABEL_AREA: u32 = 70;
/// Height taken by an 18 px caption (text and the gap below it), as plotters lays it out.
pub(super) const CAPTION_H: u32 = 28;
pub(super) const LEGEND_SAMPLE: u32 = 28;
pub(super) const LEGEND_MARGIN: u32 = 6;
pub(super) const LEGEND_FONT: f64 = 12.0;
/// Gap between the plot and a legend drawn outside it, on its right.
pub(super) const LEGEND_GAP: i32 = 10;

/// A line chart's legend: its entries, its size and where it goes.
pub(super) struct Legend {
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
pub(super) fn place_legend<DB: DrawingBackend>(
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
pub(super) fn draw_legend<DB: DrawingBackend>(
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
pub(super) fn legend_origin(
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
pub(super) fn plot_samples(plan: &LinePlan) -> Vec<(f64, f64)> {
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
