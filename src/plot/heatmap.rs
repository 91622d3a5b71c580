//! Heatmaps: viridis cells annotated with their values, marked cells, labels, colour bar.

use super::*;
use plotters::coord::Shift;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(super) struct HeatPlan<'a> {
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

pub(super) fn plan_heat(map: &Heatmap) -> Result<HeatPlan<'_>, Invalid> {
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

pub(super) fn labels_or_indices(
    labels: &[String],
    n: usize,
    what: &str,
) -> Result<Vec<String>, Invalid> {
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
pub(super) fn viridis(u: f64) -> RGBColor {
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
pub(super) fn text_color_on(bg: RGBColor) -> RGBColor {
    let luma = 0.299 * f64::from(bg.0) + 0.587 * f64::from(bg.1) + 0.114 * f64::from(bg.2);
    if luma > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// Pixel boxes of a heatmap panel.
pub(super) struct HeatLayout {
    /// Grid corners `(x0, y0, x1, y1)`.
    grid: (i32, i32, i32, i32),
    /// Colour bar corners `(x0, y0, x1, y1)`.
    bar: (i32, i32, i32, i32),
    /// Left edge of the row labels.
    row_label_x: i32,
}

pub(super) const MARGIN: i32 = 10;
pub(super) const TITLE_H: i32 = 30;
pub(super) const AXIS_TITLE: i32 = 22;
pub(super) const LABEL_FONT: f64 = 12.0;

pub(super) fn draw_heat_panel<DB: DrawingBackend>(
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

pub(super) fn text_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    size: f64,
) -> Result<i32, String> {
    let (w, _) = area.estimate_text_size(text, &font(size)).map_err(msg)?;
    Ok(w as i32)
}

pub(super) fn heat_layout<DB: DrawingBackend>(
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

pub(super) fn draw_heat_cells<DB: DrawingBackend>(
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
pub(super) fn draw_heat_marks<DB: DrawingBackend>(
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
pub(super) fn fit_text<DB: DrawingBackend>(
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

pub(super) fn draw_heat_labels<DB: DrawingBackend>(
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
pub(super) fn colorbar_ticks(plan: &HeatPlan) -> Vec<f64> {
    match plan.t_range {
        None => vec![],
        Some((lo, hi)) if hi > lo => vec![hi, (lo + hi) / 2.0, lo],
        Some((lo, _)) => vec![lo],
    }
}

pub(super) fn draw_colorbar<DB: DrawingBackend>(
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
