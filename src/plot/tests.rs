//! Tests of the figure writer.
use super::line::*;
use super::*;

fn png_size(bytes: &[u8]) -> (u32, u32) {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    assert!(bytes.len() > 33, "PNG too short: {} bytes", bytes.len());
    assert_eq!(bytes[..8], SIGNATURE, "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
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
    let distinct: std::collections::HashSet<_> = PALETTE.iter().map(|c| (c.0, c.1, c.2)).collect();
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
