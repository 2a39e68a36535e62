//! `docker-compose.yml` and the files it mounts, checked with parsers: the
//! build machines have no Docker engine, so this is what CI can hold them to.
//! The compose file must start the whole system (emulator, init, the three
//! services, collector, Jaeger, Prometheus, Grafana), build the services
//! from the Dockerfile as non-root images, mount only files that exist, and
//! wire telemetry end to end; the dashboard must be valid Grafana JSON on
//! the provisioned data sources with a panel for every metric the code
//! emits, under the name Prometheus gives it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_json::Value;
use stowage_infra::instruments_under;

/// What `docker compose up` must start.
const SYSTEM: [&str; 9] = [
    "localstack",
    "init",
    "intake",
    "ledger",
    "lifecycle",
    "otel-collector",
    "jaeger",
    "prometheus",
    "grafana",
];

/// The Stowage services, each built from its own Dockerfile target.
const SERVICES: [&str; 3] = ["intake", "ledger", "lifecycle"];

/// The metrics the dashboard is for (OpenTelemetry names). Some may not be
/// in the code yet; every metric that is must also have a panel, under its
/// exact Prometheus name (`every_metric_the_code_emits_has_a_panel`).
const DASHBOARD_METRICS: [&str; 8] = [
    "stowage.intake.grants",
    "stowage.consumer.messages",
    "stowage.consumer.lag",
    "stowage.consumer.dlq_depth",
    "stowage.ledger.violations",
    "stowage.ledger.bytes",
    "stowage.lifecycle.tiered_bytes",
    "stowage.lifecycle.saving_usd",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("infra/ is inside the repository")
        .to_path_buf()
}

/// A YAML file as JSON values, with `<<` merge keys applied.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut value: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    serde_norway::from_value(value)
        .unwrap_or_else(|e| panic!("{}: not representable as JSON: {e}", path.display()))
}

fn compose() -> Value {
    yaml(&root().join("docker-compose.yml"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml has a `services` mapping")
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or_else(|| panic!("expected a string, got {item}"))
                    .to_string()
            })
            .collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

/// A service's environment, from either the mapping or the `KEY=value` list
/// form.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect(),
        Value::Array(_) => strings(&service["environment"])
            .into_iter()
            .map(|line| match line.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (line, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A service's bind mounts as (source in the repository, target in the
/// container); named volumes are left out.
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    let Some(volumes) = service["volumes"].as_array() else {
        return Vec::new();
    };
    volumes
        .iter()
        .filter_map(|volume| {
            let (source, target) = match volume {
                Value::String(short) => {
                    let mut parts = short.split(':');
                    let source = parts.next().unwrap_or_default().to_string();
                    let target = parts
                        .next()
                        .unwrap_or_else(|| panic!("volume `{short}` has no target"));
                    (source, target.to_string())
                }
                Value::Object(long) => (
                    long["source"].as_str().unwrap_or_default().to_string(),
                    long["target"]
                        .as_str()
                        .unwrap_or_else(|| panic!("volume {volume} has no target"))
                        .to_string(),
                ),
                other => panic!("unexpected volume {other}"),
            };
            let bind = source.starts_with('.') || source.starts_with('/');
            let source = source.strip_prefix("./").unwrap_or(&source);
            bind.then(|| (root().join(source), target))
        })
        .collect()
}

/// The repository file a service sees at `container_path`, through its bind
/// mounts (the longest mount target containing the path wins).
fn mounted_at(service: &Value, container_path: &str) -> Option<PathBuf> {
    bind_mounts(service)
        .into_iter()
        .filter_map(|(source, target)| {
            let target = target.trim_end_matches('/');
            let rest = container_path.strip_prefix(target)?;
            let path = match rest {
                "" => source,
                rest => source.join(rest.strip_prefix('/')?),
            };
            Some((target.len(), path))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, path)| path)
}

/// The value of `--flag=value` or `--flag value` in a service's command.
fn command_flag(service: &Value, flag: &str) -> Option<String> {
    let command = match &service["command"] {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => strings(other),
    };
    command.iter().enumerate().find_map(|(i, arg)| {
        if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
            Some(value.to_string())
        } else if arg == flag {
            command.get(i + 1).cloned()
        } else {
            None
        }
    })
}

fn port_of(endpoint: &str) -> u16 {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("`{endpoint}` names no port"))
}

fn host_of(endpoint: &str) -> &str {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

// ------------------------------------------------------------- Dockerfile

#[derive(Debug, Default)]
struct Stage {
    name: Option<String>,
    base: String,
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    runs: Vec<String>,
}

/// The Dockerfile's stages, in order (continuation lines joined, comments
/// and parser directives left out).
fn dockerfile_stages(path: &Path) -> Vec<Stage> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let args = args.trim();
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let words: Vec<&str> = args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                stages.push(Stage {
                    name,
                    base: words.first().expect("FROM names an image").to_string(),
                    ..Stage::default()
                });
            }
            other => {
                let stage = stages
                    .last_mut()
                    .unwrap_or_else(|| panic!("`{other}` before the first FROM"));
                match other {
                    "USER" => stage.user = Some(args.to_string()),
                    "ENTRYPOINT" => {
                        stage.entrypoint = Some(serde_json::from_str(args).unwrap_or_else(|e| {
                            panic!("ENTRYPOINT is not an exec-form JSON array: {e}")
                        }))
                    }
                    "RUN" => stage.runs.push(args.to_string()),
                    _ => {}
                }
            }
        }
    }
    stages
}

/// The stage named `name` and the stages it derives from, nearest first.
fn lineage<'a>(stages: &'a [Stage], name: &str) -> Vec<&'a Stage> {
    let mut chain = Vec::new();
    let mut next = Some(name.to_string());
    while let Some(name) = next {
        let stage = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("the Dockerfile has no stage `{name}`"));
        chain.push(stage);
        next = stages
            .iter()
            .any(|s| s.name.as_deref() == Some(stage.base.as_str()))
            .then(|| stage.base.clone());
    }
    chain
}

// ------------------------------------------------------------------ tests

#[test]
fn compose_starts_the_whole_system() {
    let compose = compose();
    let names: BTreeSet<&str> = services(&compose).keys().map(String::as_str).collect();
    let missing: Vec<&str> = SYSTEM
        .iter()
        .copied()
        .filter(|s| !names.contains(s))
        .collect();
    assert!(missing.is_empty(), "docker-compose.yml lacks {missing:?}");
    for name in SYSTEM {
        let profiles = strings(&service(&compose, name)["profiles"]);
        assert!(
            profiles.is_empty(),
            "`{name}` is in profiles {profiles:?}, so `docker compose up` would not start it"
        );
    }
    let init = service(&compose, "init");
    assert!(
        strings(&init["entrypoint"])
            .iter()
            .any(|a| a.contains("stowage.yaml")),
        "init deploys infra/stowage.yaml"
    );
    for name in SERVICES {
        assert_eq!(
            service(&compose, name)["depends_on"]["init"]["condition"],
            "service_completed_successfully",
            "`{name}` starts after the stack is deployed"
        );
    }
}

#[test]
fn dependencies_name_services_of_the_file() {
    let compose = compose();
    let names: BTreeSet<&String> = services(&compose).keys().collect();
    for (name, service) in services(&compose) {
        let depends: Vec<String> = match &service["depends_on"] {
            Value::Object(map) => map.keys().cloned().collect(),
            other => strings(other),
        };
        for dependency in depends {
            assert!(
                names.contains(&dependency),
                "`{name}` depends on `{dependency}`, which is not a service"
            );
        }
    }
}

#[test]
fn images_are_pinned() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let Some(image) = service["image"].as_str() else {
            assert!(
                service.get("build").is_some(),
                "`{name}` has neither image nor build"
            );
            continue;
        };
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let tag = last.split_once(':').map(|(_, tag)| tag);
        assert!(
            image.contains('@') || tag.is_some_and(|t| !t.is_empty() && t != "latest"),
            "`{name}` uses `{image}`: pin a version tag"
        );
    }
}

#[test]
fn services_build_from_the_dockerfile_as_their_own_non_root_binary() {
    let compose = compose();
    let stages = dockerfile_stages(&root().join("Dockerfile"));
    let builder = stages
        .iter()
        .find(|s| s.runs.iter().any(|run| run.contains("cargo build")))
        .expect("a Dockerfile stage runs cargo build");
    for name in SERVICES {
        let service = service(&compose, name);
        let build = &service["build"];
        assert!(
            build.is_object(),
            "`{name}` builds with `build: {{context, target}}`, got {build}"
        );
        let context = build["context"].as_str().unwrap_or(".");
        assert!(
            root().join(context).canonicalize().ok() == root().canonicalize().ok(),
            "`{name}` builds from the repository root, not `{context}`"
        );
        let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
        assert_eq!(
            dockerfile, "Dockerfile",
            "`{name}` builds from the Dockerfile"
        );
        assert!(service["image"].is_null(), "`{name}` is built, not pulled");
        let target = build["target"]
            .as_str()
            .unwrap_or_else(|| panic!("`{name}` names its Dockerfile target"));
        let chain = lineage(&stages, target);

        let entrypoint = chain
            .iter()
            .find_map(|s| s.entrypoint.clone())
            .unwrap_or_else(|| panic!("stage `{target}` has no ENTRYPOINT"));
        let binary = format!("stowage-{name}");
        assert!(
            entrypoint
                .first()
                .is_some_and(|program| program.rsplit('/').next() == Some(binary.as_str())),
            "stage `{target}` runs {entrypoint:?}, not {binary}"
        );
        assert!(
            service["command"].is_null() && service["entrypoint"].is_null(),
            "`{name}` runs its image's entrypoint"
        );

        let user = chain
            .iter()
            .find_map(|s| s.user.clone())
            .unwrap_or_else(|| panic!("stage `{target}` sets no USER, so it runs as root"));
        let uid = user.split(':').next().unwrap_or_default();
        assert!(
            !uid.is_empty() && uid != "root" && uid != "0",
            "stage `{target}` runs as `{user}`"
        );
        assert!(
            chain.iter().all(|s| !std::ptr::eq(*s, builder)),
            "stage `{target}` derives from the build stage: the runtime image would carry the toolchain"
        );
    }
}

#[test]
fn services_send_telemetry_to_the_collector_and_log_json() {
    let compose = compose();
    let collector = collector_config(&compose);
    let otlp_http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .expect("the collector's otlp receiver serves OTLP/HTTP at an endpoint");
    for name in SERVICES {
        let env = environment(service(&compose, name));
        let endpoint = env
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| panic!("`{name}` has no OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert_eq!(
            host_of(endpoint),
            "otel-collector",
            "`{name}` exports to {endpoint}"
        );
        assert_eq!(
            port_of(endpoint),
            port_of(otlp_http),
            "`{name}` exports to {endpoint}; the collector's OTLP/HTTP receiver is at {otlp_http}"
        );
        assert_eq!(
            env.get("STOWAGE_LOG_FORMAT").map(String::as_str),
            Some("json"),
            "`{name}` logs JSON"
        );
    }
}

#[test]
fn ports_are_published_on_loopback_only() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let Some(ports) = service["ports"].as_array() else {
            continue;
        };
        for port in ports {
            let loopback = match port {
                Value::String(short) => short.starts_with("127.0.0.1:"),
                Value::Object(long) => long.get("host_ip") == Some(&Value::from("127.0.0.1")),
                _ => false,
            };
            assert!(loopback, "`{name}` publishes {port} beyond 127.0.0.1");
        }
    }
}

#[test]
fn mounted_files_exist() {
    let compose = compose();
    let named: BTreeSet<String> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    for (name, service) in services(&compose) {
        for (source, _) in bind_mounts(service) {
            assert!(
                source.exists(),
                "`{name}` mounts {}, which is not in the repository",
                source.display()
            );
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            if let Some(short) = volume.as_str() {
                let source = short.split(':').next().unwrap_or_default();
                if !source.starts_with('.') && !source.starts_with('/') && short.contains(':') {
                    assert!(
                        named.contains(source),
                        "`{name}` uses volume `{source}`, which is not declared"
                    );
                }
            }
        }
    }
}

/// The collector's configuration: the file mounted where its `--config`
/// points.
fn collector_config(compose: &Value) -> Value {
    let collector = service(compose, "otel-collector");
    let path =
        command_flag(collector, "--config").expect("the collector's command names its --config");
    let file = mounted_at(collector, &path)
        .unwrap_or_else(|| panic!("nothing from the repository is mounted at {path}"));
    assert!(
        file.ends_with("infra/otel-collector.yaml"),
        "the collector reads {}",
        file.display()
    );
    yaml(&file)
}

/// The port the collector's Prometheus exporter serves.
fn prometheus_exporter_port(config: &Value) -> u16 {
    port_of(
        config["exporters"]["prometheus"]["endpoint"]
            .as_str()
            .expect("the collector has a prometheus exporter with an endpoint"),
    )
}

#[test]
fn collector_sends_traces_to_jaeger_and_metrics_to_prometheus() {
    let compose = compose();
    let config = collector_config(&compose);
    let pipelines = &config["service"]["pipelines"];
    for (pipeline, section) in [
        ("traces", "receivers"),
        ("traces", "processors"),
        ("traces", "exporters"),
        ("metrics", "receivers"),
        ("metrics", "processors"),
        ("metrics", "exporters"),
    ] {
        for component in strings(&pipelines[pipeline][section]) {
            assert!(
                config[section].get(&component).is_some(),
                "pipeline `{pipeline}` uses {section} `{component}`, which is not defined"
            );
        }
    }
    let kind = |id: &str| id.split('/').next().unwrap_or(id).to_string();
    for pipeline in ["traces", "metrics"] {
        let receivers = strings(&pipelines[pipeline]["receivers"]);
        assert!(
            receivers.iter().any(|r| kind(r) == "otlp"),
            "pipeline `{pipeline}` receives OTLP, has {receivers:?}"
        );
        let processors = strings(&pipelines[pipeline]["processors"]);
        assert!(
            processors.iter().any(|p| kind(p) == "batch"),
            "pipeline `{pipeline}` batches, has {processors:?}"
        );
    }

    let to_jaeger = strings(&pipelines["traces"]["exporters"])
        .into_iter()
        .filter(|e| kind(e).starts_with("otlp"))
        .filter_map(|e| {
            config["exporters"][&e]["endpoint"]
                .as_str()
                .map(str::to_string)
        })
        .collect::<Vec<_>>();
    assert!(
        to_jaeger
            .iter()
            .any(|endpoint| host_of(endpoint) == "jaeger"),
        "the traces pipeline exports over OTLP to jaeger, has {to_jaeger:?}"
    );
    service(&compose, "jaeger");

    let metrics_exporters = strings(&pipelines["metrics"]["exporters"]);
    assert!(
        metrics_exporters.iter().any(|e| e == "prometheus"),
        "the metrics pipeline exports to the prometheus exporter, has {metrics_exporters:?}"
    );
    prometheus_exporter_port(&config);
}

#[test]
fn prometheus_scrapes_the_collector_exporter() {
    let compose = compose();
    let port = prometheus_exporter_port(&collector_config(&compose));
    let prometheus = service(&compose, "prometheus");
    let path = command_flag(prometheus, "--config.file")
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".to_string());
    let file = mounted_at(prometheus, &path)
        .unwrap_or_else(|| panic!("nothing from the repository is mounted at {path}"));
    let config = yaml(&file);
    let targets: Vec<String> = config["scrape_configs"]
        .as_array()
        .expect("prometheus.yml has scrape_configs")
        .iter()
        .flat_map(|job| {
            job["static_configs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|group| strings(&group["targets"]))
        .collect();
    let wanted = format!("otel-collector:{port}");
    assert!(
        targets.contains(&wanted),
        "Prometheus scrapes {targets:?}, not the collector's exporter {wanted}"
    );
}

/// The provisioned data sources, by uid: (type, url).
fn datasources(compose: &Value) -> BTreeMap<String, (String, String)> {
    let grafana = service(compose, "grafana");
    let dir = mounted_at(grafana, "/etc/grafana/provisioning/datasources")
        .expect("Grafana's provisioning is mounted from the repository");
    let mut found = BTreeMap::new();
    for file in yaml_files(&dir) {
        for source in yaml(&file)["datasources"].as_array().into_iter().flatten() {
            let uid = source["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a data source without uid", file.display()));
            found.insert(
                uid.to_string(),
                (
                    source["type"].as_str().unwrap_or_default().to_string(),
                    source["url"].as_str().unwrap_or_default().to_string(),
                ),
            );
        }
    }
    found
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no YAML file", dir.display());
    files
}

/// The dashboards Grafana loads: every JSON file in the folders its
/// dashboard providers point at.
fn dashboards(compose: &Value) -> Vec<(PathBuf, Value)> {
    let grafana = service(compose, "grafana");
    let dir = mounted_at(grafana, "/etc/grafana/provisioning/dashboards")
        .expect("Grafana's provisioning is mounted from the repository");
    let mut found = Vec::new();
    for file in yaml_files(&dir) {
        for provider in yaml(&file)["providers"].as_array().into_iter().flatten() {
            assert_eq!(provider["type"].as_str().unwrap_or("file"), "file");
            let path = provider["options"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a provider without options.path", file.display()));
            let folder = mounted_at(grafana, path)
                .unwrap_or_else(|| panic!("nothing from the repository is mounted at {path}"));
            let mut jsons: Vec<PathBuf> = std::fs::read_dir(&folder)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()))
                .map(|entry| entry.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            jsons.sort();
            for json in jsons {
                let text = std::fs::read_to_string(&json).expect("readable dashboard");
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", json.display()));
                found.push((json, value));
            }
        }
    }
    found
}

#[test]
fn grafana_provisions_prometheus_jaeger_and_the_stowage_dashboard() {
    let compose = compose();
    let sources = datasources(&compose);
    let by_type = |kind: &str| {
        sources
            .values()
            .filter(|(t, _)| t == kind)
            .map(|(_, url)| url.clone())
            .collect::<Vec<_>>()
    };
    let prometheus = by_type("prometheus");
    assert!(
        prometheus
            .iter()
            .any(|url| host_of(url) == "prometheus" && port_of(url) == 9090),
        "a Prometheus data source at prometheus:9090, have {prometheus:?}"
    );
    let jaeger = by_type("jaeger");
    assert!(
        jaeger
            .iter()
            .any(|url| host_of(url) == "jaeger" && port_of(url) == 16686),
        "a Jaeger data source at jaeger:16686, have {jaeger:?}"
    );
    let loaded = dashboards(&compose);
    assert!(
        loaded
            .iter()
            .any(|(path, _)| path.ends_with("infra/dashboards/stowage.json")),
        "Grafana loads infra/dashboards/stowage.json; loads {:?}",
        loaded.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

#[test]
fn dashboards_are_grafana_json_on_the_provisioned_datasources() {
    let compose = compose();
    let sources = datasources(&compose);
    for (path, dashboard) in dashboards(&compose) {
        let at = path.display();
        for key in ["uid", "title"] {
            assert!(
                dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
                "{at}: no {key}"
            );
        }
        assert!(
            dashboard["schemaVersion"].as_u64().is_some(),
            "{at}: no schemaVersion"
        );
        let all = panels(&dashboard);
        assert!(!all.is_empty(), "{at}: no panels");
        let mut ids = BTreeSet::new();
        for panel in all {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{at}: a panel without title: {panel}");
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: panel `{title}` has no id"));
            assert!(ids.insert(id), "{at}: panel id {id} appears twice");
            let grid = &panel["gridPos"];
            for key in ["h", "w", "x", "y"] {
                assert!(
                    grid[key].as_u64().is_some(),
                    "{at}: panel `{title}` has no gridPos.{key}"
                );
            }
            if panel["type"] == "row" {
                continue;
            }
            let check_source = |source: &Value, what: &str| {
                let uid = source["uid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: {what} of `{title}` has no datasource uid"));
                let (kind, _) = sources.get(uid).unwrap_or_else(|| {
                    panic!("{at}: {what} of `{title}` uses datasource `{uid}`, which is not provisioned")
                });
                if let Some(declared) = source["type"].as_str() {
                    assert_eq!(
                        declared, kind,
                        "{at}: {what} of `{title}` says datasource `{uid}` is a {declared}"
                    );
                }
                kind.clone()
            };
            check_source(&panel["datasource"], "the panel");
            let targets = panel["targets"]
                .as_array()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| panic!("{at}: panel `{title}` has no targets"));
            let mut refs = BTreeSet::new();
            for target in targets {
                let ref_id = target["refId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: a target of `{title}` has no refId"));
                assert!(
                    refs.insert(ref_id),
                    "{at}: refId {ref_id} twice in `{title}`"
                );
                let source = if target["datasource"].is_null() {
                    &panel["datasource"]
                } else {
                    &target["datasource"]
                };
                if check_source(source, "a target") == "prometheus" {
                    assert!(
                        target["expr"]
                            .as_str()
                            .is_some_and(|e| !e.trim().is_empty()),
                        "{at}: target {ref_id} of `{title}` has no expr"
                    );
                }
            }
        }
    }
}

/// The identifiers (metric and label names) of every Prometheus query of the
/// dashboards.
fn queried_names(compose: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, dashboard) in dashboards(compose) {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let mut word = String::new();
                for c in expr.chars().chain(std::iter::once(' ')) {
                    if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                        word.push(c);
                    } else if !word.is_empty() {
                        if !word.starts_with(|c: char| c.is_ascii_digit()) {
                            names.insert(word.clone());
                        }
                        word.clear();
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_the_code_emits_has_a_panel() {
    let root = root();
    let instruments = instruments_under(&root, &root.join("infra")).expect("sources scanned");
    let names: BTreeSet<&str> = instruments.iter().map(|(_, i)| i.name.as_str()).collect();
    assert!(
        names.contains("stowage.intake.grants") && names.contains("stowage.consumer.lag"),
        "the scan finds the code's instruments; found {names:?}"
    );
    let queried = queried_names(&compose());
    let missing: Vec<String> = instruments
        .iter()
        .filter(|(_, instrument)| {
            !instrument
                .prometheus_names()
                .iter()
                .any(|name| queried.contains(name))
        })
        .map(|(file, instrument)| {
            format!(
                "{} ({:?}, unit {:?}, in {}) is `{}` in Prometheus",
                instrument.name,
                instrument.kind,
                instrument.unit.as_deref().unwrap_or(""),
                file.strip_prefix(&root).unwrap_or(file).display(),
                instrument.prometheus_names().join("`, `"),
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a dashboard panel querying them by that name:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_dashboard_has_a_panel_for_each_stowage_metric() {
    let queried = queried_names(&compose());
    for metric in DASHBOARD_METRICS {
        let stem = metric.replace(['.', '-'], "_");
        assert!(
            queried
                .iter()
                .any(|name| name == &stem || name.starts_with(&format!("{stem}_"))),
            "no panel queries {metric} (`{stem}…` in Prometheus)"
        );
    }
}
