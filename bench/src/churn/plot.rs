//! The latency plot: CDF of ADD and DEL for both implementations, log-x in
//! milliseconds, as SVG (text is left to the viewer's fonts).

use std::path::Path;

use plotters::prelude::*;

use super::report::Raw;
use super::workloads::Pair;
use super::Result;

/// At most this many points per curve (the CDF of a few hundred samples
/// keeps every point).
const MAX_POINTS: usize = 2000;

/// One curve: label, colour, dashed, ascending samples in µs.
struct Curve {
    label: String,
    color: RGBColor,
    dashed: bool,
    sorted_us: Vec<f64>,
}

/// `(x in ms, fraction ≤ x)` for ascending samples in µs.
pub fn cdf_points(sorted_us: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted_us.len();
    let step = n.div_ceil(MAX_POINTS).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted_us[i] / 1000.0, (i + 1) as f64 / n as f64))
        .collect();
    if let (Some(&last), Some(&(_, y))) = (sorted_us.last(), pts.last()) {
        if y < 1.0 {
            pts.push((last / 1000.0, 1.0));
        }
    }
    pts
}

/// The x range in ms: whole decades around every sample.
fn x_range(curves: &[Curve]) -> (f64, f64) {
    let all = curves.iter().flat_map(|c| c.sorted_us.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return (0.1, 100.0);
    }
    let lo_ms = (lo.max(1.0) / 1000.0).log10().floor();
    let hi_ms = (hi / 1000.0).log10().ceil().max(lo_ms + 1.0);
    (10f64.powf(lo_ms), 10f64.powf(hi_ms))
}

/// Writes the plot of the sequential workload's latencies to `path`.
pub fn latency_cdf(path: &Path, raw: &Pair<Raw>, reference: &str, pods: usize) -> Result<()> {
    let (ref_add, ref_del) = (format!("{reference} ADD"), format!("{reference} DEL"));
    let curves = [
        curve(
            "vpc-cni ADD",
            RGBColor(31, 119, 180),
            false,
            &raw.ours.add_us,
        ),
        curve(
            "vpc-cni DEL",
            RGBColor(44, 160, 44),
            false,
            &raw.ours.del_us,
        ),
        curve(
            &ref_add,
            RGBColor(255, 127, 14),
            true,
            &raw.reference.add_us,
        ),
        curve(&ref_del, RGBColor(214, 39, 40), true, &raw.reference.del_us),
    ];
    draw(path, &curves, pods).map_err(|e| format!("drawing {}: {e}", path.display()).into())
}

fn curve(label: &str, color: RGBColor, dashed: bool, samples_us: &[f64]) -> Curve {
    let mut sorted_us = samples_us.to_vec();
    sorted_us.sort_by(f64::total_cmp);
    Curve {
        label: label.to_string(),
        color,
        dashed,
        sorted_us,
    }
}

fn draw(
    path: &Path,
    curves: &[Curve],
    pods: usize,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = x_range(curves);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Pod ADD/DEL latency, sequential, {pods} pods each (CDF)"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency per exec (ms, log scale)")
        .y_desc("fraction of calls ≤ x")
        .x_label_formatter(&|v| format_ms(*v))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for c in curves {
        let style = ShapeStyle::from(&c.color).stroke_width(2);
        let points = cdf_points(&c.sorted_us);
        let anno = if c.dashed {
            chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        let color = c.color;
        anno.label(c.label.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `0.5`, `2`, `30`: no float noise, no trailing zeros.
fn format_ms(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_ends_at_one() {
        let pts = cdf_points(&[500.0, 1000.0, 2000.0, 4000.0]);
        assert_eq!(pts.first(), Some(&(0.5, 0.25)));
        assert_eq!(pts.last(), Some(&(4.0, 1.0)));
        assert!(cdf_points(&[]).is_empty());
        let many: Vec<f64> = (1..=5000).map(f64::from).collect();
        let pts = cdf_points(&many);
        assert!(pts.len() <= MAX_POINTS + 1);
        assert_eq!(pts.last().map(|p| p.1), Some(1.0));
    }

    #[test]
    fn x_range_spans_whole_decades() {
        let c = [curve("a", BLACK, false, &[30_000.0, 800.0])];
        let (lo, hi) = x_range(&c);
        assert!(
            (lo - 0.1).abs() < 1e-12 && (hi - 100.0).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(format_ms(0.30000000000000004), "0.3");
        assert_eq!(format_ms(20.0), "20");
    }
}
