//! `eval.png`: top-1 and top-5 against training hours, with the target line. The font is the
//! DejaVu Sans compiled into the binary (crate `dejavu`), so no system fonts are needed.

use anyhow::{anyhow, Context, Result};
use image::ImageEncoder;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::CheckpointResult;

/// Registered once per process: plotters keeps fonts in its own global table.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; failure would only cost the labels.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Pixels of the plot.
const SIZE: (u32, u32) = (960, 600);

/// Draws the plot in memory and returns it as PNG bytes; `sweep` writes it with the report.
pub fn render(results: &[CheckpointResult], target_top5: f64, title: &str) -> Result<Vec<u8>> {
    register_font();
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let max_hours = results
            .iter()
            .map(|r| r.hours)
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_hours, 0.0..100.0)
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("training hours")
            .y_desc("validation accuracy (%)")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("plot: {e}"))?;
        let series = |f: fn(&CheckpointResult) -> f64| -> Vec<(f64, f64)> {
            results.iter().map(|r| (r.hours, f(r))).collect()
        };
        for (name, color, points) in [
            ("top-5", BLUE, series(|r| r.top5)),
            ("top-1", RED, series(|r| r.top1)),
        ] {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow!("plot: {e}"))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| anyhow!("plot: {e}"))?;
        }
        let target = target_top5;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, target), (max_hours, target)],
                BLACK.mix(0.5),
            ))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(format!("target {target}% top-5"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("plot: {e}"))?;
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, SIZE.0, SIZE.1, image::ExtendedColorType::Rgb8)
        .context("plot: encoding the PNG")?;
    Ok(png)
}
