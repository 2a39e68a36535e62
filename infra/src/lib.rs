//! Stowage's deployment files, checked without Docker: `docker-compose.yml`,
//! the OpenTelemetry Collector, Prometheus and Grafana configurations and the
//! dashboard in `infra/` (the checks are in `tests/deployment.rs`).
//!
//! This library holds what those checks need to know about the code: which
//! metric instruments it creates ([`instruments_in`], [`instruments_under`])
//! and the names Prometheus knows them by once the Collector's Prometheus
//! exporter has translated them ([`Instrument::prometheus_names`]).

use std::path::{Path, PathBuf};

/// What an OpenTelemetry instrument exports, as far as naming goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentKind {
    /// A monotonic sum (`*_counter`, `*_observable_counter`).
    Counter,
    /// A sum that may go down (`*_up_down_counter`).
    UpDownCounter,
    /// `*_gauge`, `*_observable_gauge`.
    Gauge,
    /// `*_histogram`.
    Histogram,
}

impl InstrumentKind {
    /// The kind a `Meter` method creates, from the method's name
    /// (`u64_counter`, `f64_observable_gauge`, `i64_up_down_counter`, ...).
    pub fn of_method(method: &str) -> Option<Self> {
        let rest = ["u64_", "i64_", "f64_"]
            .iter()
            .find_map(|prefix| method.strip_prefix(prefix))?;
        let rest = rest.strip_prefix("observable_").unwrap_or(rest);
        match rest {
            "counter" => Some(Self::Counter),
            "up_down_counter" => Some(Self::UpDownCounter),
            "gauge" => Some(Self::Gauge),
            "histogram" => Some(Self::Histogram),
            _ => None,
        }
    }
}

/// One metric instrument the code creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub name: String,
    pub kind: InstrumentKind,
    pub unit: Option<String>,
}

impl Instrument {
    /// The series names Prometheus has for this instrument, scraped from the
    /// Collector's Prometheus exporter (with its default suffixes): one name,
    /// or for a histogram its `_bucket`, `_sum` and `_count` series.
    pub fn prometheus_names(&self) -> Vec<String> {
        let base = prometheus_name(&self.name, self.unit.as_deref(), self.kind);
        match self.kind {
            InstrumentKind::Histogram => ["bucket", "sum", "count"]
                .iter()
                .map(|suffix| format!("{base}_{suffix}"))
                .collect(),
            _ => vec![base],
        }
    }
}

/// The name the Collector's Prometheus exporter gives an OTLP metric:
/// the name's letters and digits in runs joined by `_`; the unit spelled out
/// and appended unless the name already has it as a word (`s` → `seconds`,
/// `By` → `bytes`, `By/s` → `bytes_per_second`; units in braces are
/// annotations and dropped); `_total` for a monotonic counter; `_ratio` for
/// a gauge of unit `1`. For a histogram this is the stem of its series.
pub fn prometheus_name(name: &str, unit: Option<&str>, kind: InstrumentKind) -> String {
    let mut tokens = words(name);
    let unit = unit.unwrap_or("").trim();
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), per.trim()),
        None => (unit, ""),
    };
    if !main.is_empty() && !main.contains(['{', '}']) {
        let main = words(main_unit(main)).join("_");
        if !main.is_empty() && !tokens.contains(&main) {
            tokens.push(main);
        }
    }
    if !per.is_empty() && !per.contains(['{', '}']) {
        let per = words(per_unit(per)).join("_");
        if !per.is_empty() && !tokens.contains(&per) {
            tokens.push("per".to_string());
            tokens.push(per);
        }
    }
    if kind == InstrumentKind::Counter {
        tokens.retain(|t| t != "total");
        tokens.push("total".to_string());
    }
    if kind == InstrumentKind::Gauge && unit == "1" {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".to_string());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// The instruments a Rust source file creates: every call of a `Meter`
/// method such as `.u64_counter("name")`, with the unit of the
/// `.with_unit("...")` in the same builder chain (up to its `.build()`, or
/// the end of the statement).
/// A name or unit that is not a string literal is an error, since the
/// dashboard check could not know it.
pub fn instruments_in(source: &str) -> Result<Vec<Instrument>, String> {
    let mut found = Vec::new();
    for needle in ["_counter(", "_gauge(", "_histogram("] {
        for (at, _) in source.match_indices(needle) {
            let paren = at + needle.len() - 1;
            let start = source[..paren]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let method = &source[start..paren];
            let Some(kind) = InstrumentKind::of_method(method) else {
                continue;
            };
            if !source[..start].trim_end().ends_with('.') {
                continue;
            }
            let (name, after_name) = string_literal(source, paren + 1)
                .ok_or_else(|| format!("`{method}` without a string literal as its name"))?;
            let rest = &source[after_name..];
            let chain_end = after_name
                + rest
                    .find(".build()")
                    .or_else(|| rest.find(';'))
                    .unwrap_or(rest.len());
            let chain = &source[after_name..chain_end];
            let unit = match chain.find(".with_unit(") {
                Some(i) => {
                    let arg = after_name + i + ".with_unit(".len();
                    let (unit, _) = string_literal(source, arg)
                        .ok_or_else(|| format!("`{name}`: `with_unit` without a string literal"))?;
                    Some(unit)
                }
                None => None,
            };
            found.push((at, Instrument { name, kind, unit }));
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(found
        .into_iter()
        .map(|(_, instrument)| instrument)
        .collect())
}

/// The string literal starting at `from` (after whitespace): its text and
/// the index after its closing quote.
fn string_literal(source: &str, from: usize) -> Option<(String, usize)> {
    let rest = &source[from..];
    let open = from + (rest.len() - rest.trim_start().len());
    let body = source[open..].strip_prefix('"')?;
    let close = body.find('"')?;
    Some((body[..close].to_string(), open + 1 + close + 1))
}

/// The instruments created by the Rust sources under `root`: files under a
/// `src/` folder, leaving out `target/`, hidden folders and `skip`.
pub fn instruments_under(root: &Path, skip: &Path) -> Result<Vec<(PathBuf, Instrument)>, String> {
    let mut files = Vec::new();
    collect_sources(root, skip, false, &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let instruments =
            instruments_in(&source).map_err(|e| format!("{}: {e}", file.display()))?;
        found.extend(instruments.into_iter().map(|i| (file.clone(), i)));
    }
    Ok(found)
}

fn collect_sources(
    dir: &Path,
    skip: &Path,
    in_src: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .is_dir();
        if is_dir {
            if name == "target" || name.starts_with('.') || path == skip {
                continue;
            }
            collect_sources(&path, skip, in_src || name == "src", files)?;
        } else if in_src && name.ends_with(".rs") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str, unit: &str, kind: InstrumentKind) -> String {
        prometheus_name(name, (!unit.is_empty()).then_some(unit), kind)
    }

    #[test]
    fn counters_get_total_and_dots_become_underscores() {
        assert_eq!(
            name("stowage.intake.grants", "", InstrumentKind::Counter),
            "stowage_intake_grants_total"
        );
        assert_eq!(
            name("requests.total", "", InstrumentKind::Counter),
            "requests_total"
        );
    }

    #[test]
    fn units_are_spelled_out_once() {
        assert_eq!(
            name("stowage.consumer.lag", "s", InstrumentKind::Gauge),
            "stowage_consumer_lag_seconds"
        );
        assert_eq!(
            name("stowage.ledger.bytes", "By", InstrumentKind::Gauge),
            "stowage_ledger_bytes"
        );
        assert_eq!(
            name(
                "stowage.lifecycle.tiered_bytes",
                "By",
                InstrumentKind::Counter
            ),
            "stowage_lifecycle_tiered_bytes_total"
        );
        assert_eq!(
            name("system.network.io", "By/s", InstrumentKind::Gauge),
            "system_network_io_bytes_per_second"
        );
        assert_eq!(
            name("http.server.duration", "ms", InstrumentKind::Histogram),
            "http_server_duration_milliseconds"
        );
    }

    #[test]
    fn annotations_are_dropped_and_unit_one_is_a_ratio_on_gauges() {
        assert_eq!(
            name(
                "stowage.consumer.dlq_depth",
                "{message}",
                InstrumentKind::Gauge
            ),
            "stowage_consumer_dlq_depth"
        );
        assert_eq!(
            name("cache.hits", "1", InstrumentKind::Gauge),
            "cache_hits_ratio"
        );
        assert_eq!(
            name("cache.hits", "1", InstrumentKind::Counter),
            "cache_hits_total"
        );
        assert_eq!(
            name("queue.items", "", InstrumentKind::UpDownCounter),
            "queue_items"
        );
    }

    #[test]
    fn histograms_are_three_series() {
        let instrument = Instrument {
            name: "stowage.grant.seconds".into(),
            kind: InstrumentKind::Histogram,
            unit: Some("s".into()),
        };
        assert_eq!(
            instrument.prometheus_names(),
            [
                "stowage_grant_seconds_bucket",
                "stowage_grant_seconds_sum",
                "stowage_grant_seconds_count"
            ]
        );
    }

    #[test]
    fn finds_instruments_with_their_units_in_builder_chains() {
        let source = r#"
            let meter = global::meter("stowage");
            let messages = meter
                .u64_counter("stowage.consumer.messages")
                .with_description("Messages handled; see u64_counter(x)")
                .build();
            let lag = meter
                .f64_gauge( "stowage.consumer.lag" )
                .with_description("Age")
                .with_unit("s")
                .build();
            let depth = meter.i64_up_down_counter("a.depth").build();
            let seen = meter.u64_observable_gauge("a.seen").with_unit("{item}").with_callback(f).build();
            fn u64_counter(&self) {}
        "#;
        let found = instruments_in(source).unwrap();
        assert_eq!(
            found,
            [
                Instrument {
                    name: "stowage.consumer.messages".into(),
                    kind: InstrumentKind::Counter,
                    unit: None
                },
                Instrument {
                    name: "stowage.consumer.lag".into(),
                    kind: InstrumentKind::Gauge,
                    unit: Some("s".into())
                },
                Instrument {
                    name: "a.depth".into(),
                    kind: InstrumentKind::UpDownCounter,
                    unit: None
                },
                Instrument {
                    name: "a.seen".into(),
                    kind: InstrumentKind::Gauge,
                    unit: Some("{item}".into())
                },
            ]
        );
    }

    #[test]
    fn a_name_that_is_not_a_literal_is_an_error() {
        let error = instruments_in("meter.u64_counter(NAME).build();").unwrap_err();
        assert!(error.contains("u64_counter"), "{error}");
    }
}
