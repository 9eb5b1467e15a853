//! The last GPU measurement on record: perf/latest.json (scripts/perf-record.py writes it after
//! each GPU run), embedded at build time. `kiln bench` prints it under the emulator's table, so
//! a run without a GPU also shows how fast the kernels were on hardware, on which card, date and
//! commit, beside which peers.

use serde_json::Value;

/// perf/latest.json as this build's commit holds it.
const LATEST: &str = include_str!("../../perf/latest.json");

/// The record's summary: a header naming the card, date and commit, then, indented (so that
/// nothing reads them as rows of the table above), one line per op, direction and dtype measured
/// beside a peer: its % of copy bandwidth where the bench timed it, and kiln's time over each
/// peer's (below 1: kiln faster). None when the record has no card.
pub fn last_gpu_record() -> Option<Vec<String>> {
    summarise(&serde_json::from_str(LATEST).ok()?)
}

fn summarise(record: &Value) -> Option<Vec<String>> {
    let card = record["card"].as_str()?;
    let date = record["date"].as_str().unwrap_or("?");
    let commit = record["commit"].as_str().unwrap_or("?");
    let mut lines = vec![
        format!(
            "last GPU measurement on record: {card}, {date}, commit {} (perf/latest.json; kernels changed since \
             are named in the README's GPU column)",
            &commit[..commit.len().min(10)]
        ),
        format!(
            "  {:<28} {:<8} {:<5} {:>7}  kiln time / peer time (below 1: kiln faster)",
            "op", "dir", "dtype", "%copy"
        ),
    ];
    for r in record["results"].as_array()? {
        let Some(peers) = r["peers"].as_object().filter(|p| !p.is_empty()) else { continue };
        let ratios: Vec<String> =
            peers.iter().filter_map(|(peer, ratio)| Some(format!("{peer} {:.2}", ratio.as_f64()?))).collect();
        let pct = r["pct_of_copy"].as_f64().map_or("-".to_string(), |p| format!("{p:.1}%"));
        lines.push(format!(
            "  {:<28} {:<8} {:<5} {pct:>7}  {}",
            r["op"].as_str().unwrap_or("?"),
            r["dir"].as_str().unwrap_or("?"),
            r["dtype"].as_str().unwrap_or("?"),
            ratios.join(", ")
        ));
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_embedded_record_names_its_card_and_its_peer_rows() {
        let lines = last_gpu_record().expect("perf/latest.json has a card");
        assert!(lines[0].contains("NVIDIA") && lines[0].contains("commit"), "{}", lines[0]);
        assert!(lines.len() > 10, "only {} lines", lines.len());
    }

    #[test]
    fn rows_without_peers_are_left_out_and_missing_figures_print_as_dashes() {
        let record = json!({"card": "X", "date": "2026-01-01", "commit": "0123456789abcdef",
        "results": [
            {"op": "a/b", "dir": "fwd", "dtype": "bf16", "pct_of_copy": 91.26, "peers": {"eager": 0.5}},
            {"op": "a/b", "dir": "fwd+bwd", "dtype": "bf16", "peers": {"eager": 0.75, "compile": 1.5}},
            {"op": "a/c", "dir": "fwd", "dtype": "bf16", "pct_of_copy": 50.0}
        ]});
        let lines = summarise(&record).unwrap();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].contains("X, 2026-01-01, commit 0123456789 "), "{}", lines[0]);
        assert!(lines[2].contains("91.3%") && lines[2].ends_with("eager 0.50"), "{}", lines[2]);
        let both = lines[3].contains("compile 1.50") && lines[3].contains("eager 0.75");
        assert!(lines[3].contains(" - ") && both, "{}", lines[3]);
        assert!(summarise(&json!({"results": []})).is_none());
    }
}
