//! `kiln plot`: the last GPU run on record (perf/latest.json) drawn as one SVG chart per family,
//! titled with the card, date and commit. Top panel: each bf16 op and direction as `kiln bench`
//! timed it, in % of the measured copy bandwidth (attention: TFLOP/s). Bottom panel: kiln's time
//! over each peer's on the same tensors (PyTorch eager, torch.compile, SDPA, FlexAttention), with
//! the line at 1: a bar left of it is a peer kiln beats, right of it one that beats kiln.
//!
//! Drawn with plotters' primitives (rectangles, lines, text) on its SVG backend, which writes
//! text as SVG text elements: no font files, so it runs on a bare machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

use crate::core::error::{Error, Result};

/// One bar: its label and value.
struct Bar {
    label: String,
    value: f64,
}

/// One horizontal bar panel.
struct Panel {
    title: String,
    unit: String,
    bars: Vec<Bar>,
    /// A vertical reference line (1 for the ratios).
    reference: Option<f64>,
}

const WIDTH: u32 = 900;
const ROW: i32 = 18;
const LABEL_WIDTH: i32 = 330;
const PLOT_WIDTH: i32 = 500;
const HEADER: i32 = 50;
const PANEL_GAP: i32 = 46;

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::InvalidValue { arg: "plot", reason: e.to_string() }
}

/// The panels of one family's chart from the record's results.
fn family_panels(family: &str, results: &[&Value]) -> Vec<Panel> {
    let attention = family == "attention";
    let mut throughput = Vec::new();
    let mut ratios = Vec::new();
    for r in results {
        let (op, dir) = (r["op"].as_str().unwrap_or("?"), r["dir"].as_str().unwrap_or("?"));
        let dtype = r["dtype"].as_str().unwrap_or("");
        if dtype == "bf16" {
            let value = if attention { r["tflops"].as_f64() } else { r["pct_of_copy"].as_f64() };
            if let Some(value) = value {
                throughput.push(Bar { label: format!("{op} {dir}"), value });
            }
        }
        if let Some(peers) = r["peers"].as_object() {
            for (peer, ratio) in peers {
                if let Some(value) = ratio.as_f64() {
                    ratios.push(Bar { label: format!("{op} {dir} vs {peer}"), value });
                }
            }
        }
    }
    let mut panels = Vec::new();
    if !throughput.is_empty() {
        let (title, unit) = if attention {
            ("kiln bench, bf16", "TFLOP/s")
        } else {
            ("kiln bench, bf16: % of the measured copy bandwidth", "%")
        };
        panels.push(Panel { title: title.into(), unit: unit.into(), bars: throughput, reference: None });
    }
    if !ratios.is_empty() {
        panels.push(Panel {
            title: "kiln time / peer time on the same tensors (left of 1: kiln faster)".into(),
            unit: "×".into(),
            bars: ratios,
            reference: Some(1.0),
        });
    }
    panels
}

/// A round axis maximum at or above `max` (1, 2 or 5 times a power of ten).
fn axis_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|&v| v >= max).unwrap_or(10.0 * p)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    top: i32,
    panel: &Panel,
) -> Result<i32>
where
    DB::ErrorType: 'static,
{
    let text = |s: &str, x: i32, y: i32, size: u32, color: &RGBColor| -> Result<()> {
        area.draw(&Text::new(s.to_string(), (x, y), ("sans-serif", size).into_font().color(color))).map_err(plot_error)
    };
    text(&panel.title, 10, top, 14, &BLACK)?;
    let max = axis_max(panel.bars.iter().map(|b| b.value).fold(panel.reference.unwrap_or(0.0), f64::max));
    let x_of = |v: f64| LABEL_WIDTH + (v / max * PLOT_WIDTH as f64).round() as i32;
    let first = top + 22;
    let bottom = first + ROW * panel.bars.len() as i32;
    // Grid and axis labels: five steps of the round maximum.
    for step in 0..=5 {
        let v = (max * step as f64 / 5.0 * 1e6).round() / 1e6; // no 0.30000000000000004
        let x = x_of(v);
        area.draw(&PathElement::new(vec![(x, first), (x, bottom)], RGBColor(220, 220, 220))).map_err(plot_error)?;
        text(&format!("{v}{}", panel.unit), x - 10, bottom + 4, 11, &RGBColor(90, 90, 90))?;
    }
    for (i, bar) in panel.bars.iter().enumerate() {
        let y = first + ROW * i as i32;
        text(&bar.label, 10, y + 3, 11, &BLACK)?;
        let color = match panel.reference {
            Some(r) if bar.value > r => RGBColor(205, 92, 72),
            Some(_) => RGBColor(70, 140, 90),
            None => RGBColor(70, 110, 170),
        };
        let end = x_of(bar.value.clamp(0.0, max));
        area.draw(&Rectangle::new([(LABEL_WIDTH, y + 2), (end.max(LABEL_WIDTH + 1), y + ROW - 3)], color.filled()))
            .map_err(plot_error)?;
        text(&format!("{:.2}", bar.value), end + 4, y + 3, 10, &RGBColor(60, 60, 60))?;
    }
    if let Some(r) = panel.reference {
        let x = x_of(r);
        area.draw(&PathElement::new(vec![(x, first - 4), (x, bottom + 2)], BLACK.stroke_width(2)))
            .map_err(plot_error)?;
    }
    Ok(bottom + 20)
}

/// Draws one SVG per family of `record` (perf/latest.json's text) into `out_dir`, named
/// `<family>.svg`; returns their paths, in family order. Families without a figure are left out.
pub fn plot_record(record: &str, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let record: Value = serde_json::from_str(record).map_err(plot_error)?;
    let card = record["card"].as_str().ok_or_else(|| plot_error("the record names no card"))?;
    let date = record["date"].as_str().unwrap_or("?");
    let commit = record["commit"].as_str().unwrap_or("?");
    let results = record["results"].as_array().ok_or_else(|| plot_error("the record has no results"))?;
    let mut families: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in results {
        if let Some(op) = r["op"].as_str() {
            families.entry(op.split('/').next().unwrap_or(op)).or_default().push(r);
        }
    }
    std::fs::create_dir_all(out_dir).map_err(plot_error)?;
    let mut written = Vec::new();
    for (family, rows) in families {
        let panels = family_panels(family, &rows);
        if panels.is_empty() {
            continue;
        }
        let rows_drawn: usize = panels.iter().map(|p| p.bars.len()).sum();
        let height = HEADER + panels.len() as i32 * (PANEL_GAP + 20) + ROW * rows_drawn as i32;
        let path = out_dir.join(format!("{family}.svg"));
        {
            let root = SVGBackend::new(&path, (WIDTH, height as u32)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let title = format!("kiln {family} on {card}, {date}, commit {}", &commit[..commit.len().min(10)]);
            root.draw(&Text::new(title, (10, 12), ("sans-serif", 17).into_font())).map_err(plot_error)?;
            let mut top = HEADER;
            for panel in &panels {
                top = draw_panel(&root, top, panel)? + PANEL_GAP - 20;
            }
            root.present().map_err(plot_error)?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(axis_max(0.8), 1.0);
        assert_eq!(axis_max(1.2), 2.0);
        assert_eq!(axis_max(63.0), 100.0);
        assert_eq!(axis_max(137.97), 200.0);
        assert_eq!(axis_max(0.0), 1.0);
    }

    #[test]
    fn a_record_becomes_one_titled_chart_per_family_with_its_bars() {
        let record = r#"{"card": "Card X", "date": "2026-01-02", "commit": "0123456789abcdef",
            "results": [
              {"op": "norm/rmsnorm", "dir": "fwd", "dtype": "bf16", "pct_of_copy": 91.5},
              {"op": "norm/rmsnorm", "dir": "fwd", "dtype": "f16", "pct_of_copy": 90.0},
              {"op": "norm/rmsnorm", "dir": "fwd+bwd", "dtype": "bf16", "peers": {"eager": 0.5, "compile": 1.25}},
              {"op": "attention/alibi", "dir": "fwd", "dtype": "bf16", "tflops": 137.9},
              {"op": "equivariant/sh", "dir": "fwd", "dtype": "f32", "pct_of_copy": 40.0}
            ]}"#;
        let dir = std::env::temp_dir().join(format!("kiln-plot-{}", std::process::id()));
        let written = plot_record(record, &dir).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        // equivariant has no bf16 row and no peer: no chart.
        assert_eq!(names, ["attention.svg", "norm.svg"]);
        let norm = std::fs::read_to_string(&written[1]).unwrap();
        assert!(norm.contains("kiln norm on Card X, 2026-01-02, commit 0123456789"), "title");
        assert!(norm.contains("norm/rmsnorm fwd") && norm.contains("91.50"), "the bf16 bar");
        assert!(!norm.contains("90.00"), "the f16 row is left out");
        assert!(norm.contains("vs eager") && norm.contains("0.50") && norm.contains("1.25"), "the peer bars");
        let attention = std::fs::read_to_string(&written[0]).unwrap();
        assert!(attention.contains("TFLOP/s") && attention.contains("137.90"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(plot_record(r#"{"results": []}"#, &dir).is_err(), "a record without a card");
    }
}
