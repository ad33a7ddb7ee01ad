//! The report's SVG charts (plotters): grouped bars and lines.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(crate) type Series = (String, Vec<f64>);

/// Grouped bar chart: one group per label, one bar per series.
pub(crate) fn bars(
    path: &Path,
    title: &str,
    ylabel: &str,
    groups: &[String],
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len().max(1) as f64;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(80);
    let base = if log_y { min / 2.0 } else { 0.0 };
    let fmt_x = |x: &f64| {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 {
            groups.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    if log_y {
        let mut chart = b.build_cartesian_2d(0f64..n, ((min / 2.0)..(max * 2.0)).log_scale())?;
        draw_chart(&mut chart, groups.len(), &fmt_x, ylabel, series, base)?;
    } else {
        let mut chart = b.build_cartesian_2d(0f64..n, 0f64..max * 1.15)?;
        draw_chart(&mut chart, groups.len(), &fmt_x, ylabel, series, base)?;
    }
    root.present()?;
    Ok(())
}

pub(crate) type Chart<'a, Y> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// Mesh, bars and legend of a bar chart, whatever its y scale.
pub(crate) fn draw_chart<Y>(
    chart: &mut Chart<'_, Y>,
    groups: usize,
    fmt_x: &dyn Fn(&f64) -> String,
    ylabel: &str,
    series: &[Series],
    base: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(fmt_x)
        .y_desc(ylabel)
        .disable_x_mesh()
        .draw()?;
    draw_bars(chart, series, base)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

pub(crate) fn draw_bars<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, Y>,
    series: &[Series],
    base: f64,
) -> Result<()> {
    let k = series.len().max(1) as f64;
    for (si, (name, vals)) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        chart
            .draw_series(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(gi, v)| {
                        let x0 = gi as f64 + 0.1 + 0.8 * si as f64 / k;
                        Rectangle::new([(x0, base), (x0 + 0.8 / k, *v)], c.filled())
                    }),
            )?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    Ok(())
}

/// Line chart of (x, y) series.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.1.iter().copied());
    let (xmin, xmax) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let ymax = pts().fold(0.0f64, |a, (_, y)| a.max(y)).max(1e-9);
    if xmin > xmax {
        return Ok(());
    }
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin * 0.9..xmax * 1.05, 0f64..ymax * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .draw()?;
    for (si, (name, v)) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(v.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svgs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.svg");
        bars(
            &p,
            "t",
            "y",
            &["a".into(), "b".into()],
            &[("s1".into(), vec![1.0, 2.0]), ("s2".into(), vec![3.0, 0.5])],
            false,
        )
        .unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(
            s.starts_with("<svg") && s.matches("<rect").count() >= 4,
            "{s}"
        );
        let l = d.path().join("l.svg");
        lines(
            &l,
            "t",
            "x",
            "y",
            &[("s".into(), vec![(64.0, 1.0), (1518.0, 3.0)])],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&l).unwrap().contains("<polyline"));
    }
}
