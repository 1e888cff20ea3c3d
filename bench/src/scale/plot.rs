//! The scale plot: per policy, the fraction of nodes with all their pods
//! ready against time since the scale-out, as SVG.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

/// One curve: label, colour, dashed, per-node times.
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Dashed (the larger fleet).
    pub dashed: bool,
    /// Per node: time to all pods ready.
    pub times: Vec<Duration>,
}

/// `(seconds, fraction ≤)` for the ascending CDF of `times`.
pub fn cdf(times: &[Duration]) -> Vec<(f64, f64)> {
    let mut s: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let step = n.div_ceil(2000).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (s[i], (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = s.last() {
        pts.push((last, 1.0));
    }
    pts
}

/// Draws `curves` into `path`.
pub fn draw(path: &Path, title: &str, curves: &[Curve]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let hi = curves
        .iter()
        .flat_map(|c| c.times.iter())
        .map(Duration::as_secs_f64)
        .fold(1.0f64, f64::max);
    let hi = 10f64.powf(hi.log10().ceil());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((0.1f64..hi).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("seconds since every node asked for 30 pods (log scale)")
        .y_desc("fraction of nodes with all pods ready")
        .label_style(("sans-serif", 14))
        .draw()?;
    for c in curves {
        let style = ShapeStyle::from(&c.color).stroke_width(2);
        let pts: Vec<(f64, f64)> = cdf(&c.times)
            .into_iter()
            .map(|(x, y)| (x.max(0.1), y))
            .collect();
        let anno = if c.dashed {
            chart.draw_series(DashedLineSeries::new(pts, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(pts, style))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_sorted_and_ends_at_one() {
        let t = [3, 1, 2].map(Duration::from_secs);
        let pts = cdf(&t);
        assert_eq!(pts.first(), Some(&(1.0, 1.0 / 3.0)));
        assert_eq!(pts.last(), Some(&(3.0, 1.0)));
    }
}
