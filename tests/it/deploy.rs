//! Deployment artifacts under `deploy/`: the annotated example config declares every key the
//! config accepts, parses and validates (through the library and through the real binary's
//! `check-config` / `print-config`); `check-config` on a broken file names every problem's key;
//! the Kubernetes manifests, compose file, Dockerfile and systemd unit parse and agree with the
//! example on the port, the data directory, the config path, the health endpoints and the stop
//! timeouts; the client-side cargo config points at registries the example declares.
//! No network: nothing here starts a server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cargohold::config::env::{self, KEYS};
use cargohold::config::raw::{RawCache, RawConfig, RawLimits, RawRegistry, RawTls};
use cargohold::config::{units, CacheConfig, Config, Limits, Overrides, RegistryKind, RegistrySpec, Shadow};
use cargohold::http::route::{route, Route};
use hyper::Method;
use serde::Serialize;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_cargohold");

/// The port every artifact uses.
const PORT: u16 = 8080;
/// Where every artifact keeps the data directory.
const DATA_DIR: &str = "/var/lib/cargohold";
/// Where the container image, the StatefulSet and the systemd unit read the config.
const CONFIG_PATH: &str = "/etc/cargohold/config.toml";

/// Registry keys that only a proxy takes, and those that only a hosted registry takes; every
/// other key of `RawRegistry` applies to both (checked to be a partition of its fields).
const PROXY_ONLY: &[&str] = &[
    "upstream",
    "offline",
    "prune_index",
    "index_ttl",
    "negative_ttl",
    "upstream_timeout",
    "upstream_concurrency",
    "upstream_deadline",
    "ca_file",
];
const HOSTED_ONLY: &[&str] = &[
    "upstreams",
    "shadow",
    "allow_upstream_names",
    "allowed_licenses",
    "allow_license_file_only",
];
const COMMON: &[&str] = &[
    "kind",
    "description",
    "labels",
    "auth_required",
    "advisories",
    "advisories_allow",
];

fn deploy_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)
}

fn read(rel: &str) -> String {
    let p = deploy_path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn parse_raw(text: &str, name: &str) -> RawConfig {
    RawConfig::from_str(text, Path::new(name)).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

/// Parses and validates like `cargohold serve` does (without the environment layer).
fn load(text: &str, name: &str) -> Config {
    Config::from_raw(parse_raw(text, name), &Overrides::default())
        .unwrap_or_else(|e| panic!("{name} does not validate: {e}"))
}

/// The text with the settings left out on purpose put back: a line `#[section]` or `#key = ...`
/// (a `#` directly followed by the setting; prose comments have a space) loses its `#`.
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn the_example() -> Config {
    load(&read("config.example.toml"), "deploy/config.example.toml")
}

/// Every field name of a config struct (from its serialized default, where all are `null`).
fn fields<T: Serialize + Default>() -> BTreeSet<String> {
    match serde_json::to_value(T::default()).expect("serializes") {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not a struct: {other}"),
    }
}

/// The field names a config struct has set.
fn set_fields<T: Serialize>(v: &T) -> BTreeSet<String> {
    match serde_json::to_value(v).expect("serializes") {
        serde_json::Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect(),
        other => panic!("not a struct: {other}"),
    }
}

fn strs(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The example config through the library.

#[test]
fn example_config_parses_and_validates_with_documented_defaults() {
    let c = the_example();
    assert_eq!(c.listen.to_string(), format!("0.0.0.0:{PORT}"));
    assert_eq!(c.data_dir, Path::new(DATA_DIR));
    assert_eq!(c.public_url.as_deref(), Some("https://cargo.example"));
    assert_eq!(
        c.tls, None,
        "[tls] is commented out so the example runs without certificate files"
    );
    // Every value the example spells out is the default its comment names.
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.cache, CacheConfig::default());
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));

    let proxy = &c.registries["crates-io"];
    let mut want = RegistrySpec::new("crates-io", RegistryKind::Proxy);
    want.description = proxy.description.clone();
    want.labels = proxy.labels.clone();
    assert_eq!(
        *proxy, want,
        "the proxy's settings are the defaults, upstream = crates.io"
    );

    let local = &c.registries["local"];
    assert_eq!(local.kind, RegistryKind::Hosted);
    assert_eq!(local.upstreams, vec!["crates-io"], "`local` is the merged view");
    assert_eq!(local.shadow, Shadow::Crate);
    assert!(!local.allow_upstream_names && !local.auth_required);

    let private = &c.registries["private"];
    assert_eq!(private.kind, RegistryKind::Hosted);
    assert!(private.auth_required, "`private` is the auth-required registry");
}

#[test]
fn example_config_declares_every_key() {
    let text = read("config.example.toml");
    let full_text = uncomment(&text);
    let full = parse_raw(&full_text, "deploy/config.example.toml (uncommented)");

    // Every scalar key (each one an environment variable too).
    for key in KEYS {
        assert!(
            env::is_set(&full, key),
            "`{key}` is neither set nor commented out (`#{}`) in deploy/config.example.toml",
            key.rsplit('.').next().unwrap_or(key)
        );
    }
    // Every field of every section, including any that `KEYS` does not list.
    for (section, all, set) in [
        ("top level", fields::<RawConfig>(), set_fields(&full)),
        (
            "[tls]",
            fields::<RawTls>(),
            set_fields(full.tls.as_ref().expect("[tls]")),
        ),
        (
            "[limits]",
            fields::<RawLimits>(),
            set_fields(full.limits.as_ref().expect("[limits]")),
        ),
        (
            "[cache]",
            fields::<RawCache>(),
            set_fields(full.cache.as_ref().expect("[cache]")),
        ),
    ] {
        let missing: Vec<_> = all.difference(&set).collect();
        assert!(
            missing.is_empty(),
            "{section} keys missing from the example: {missing:?}"
        );
    }

    // Registry keys: a partition into common / proxy-only / hosted-only, so a new key fails here
    // until it is classified and added to the example.
    let all = fields::<RawRegistry>();
    let (common, proxy_only, hosted_only) = (strs(COMMON), strs(PROXY_ONLY), strs(HOSTED_ONLY));
    let classified: BTreeSet<String> = common.iter().chain(&proxy_only).chain(&hosted_only).cloned().collect();
    assert_eq!(
        classified, all,
        "classify every RawRegistry key in PROXY_ONLY, HOSTED_ONLY or COMMON"
    );
    let regs = full.registries.as_ref().expect("[registries]");
    let of_kind = |kind: &str| -> Vec<(&String, &RawRegistry)> {
        regs.iter().filter(|(_, r)| r.kind.as_deref() == Some(kind)).collect()
    };
    let proxies = of_kind("proxy");
    let hosted = of_kind("hosted");
    let want_proxy: BTreeSet<String> = common.union(&proxy_only).cloned().collect();
    let want_hosted: BTreeSet<String> = common.union(&hosted_only).cloned().collect();
    assert!(
        proxies.iter().any(|(_, r)| set_fields(*r) == want_proxy),
        "no proxy registry declares exactly {want_proxy:?}"
    );
    assert!(
        hosted.iter().any(|(_, r)| set_fields(*r) == want_hosted),
        "no hosted registry declares exactly {want_hosted:?}"
    );
    assert!(
        hosted.iter().any(|(_, r)| r.auth_required == Some(true)),
        "no auth-required hosted registry"
    );

    // What is commented out is valid once put back (`ca_file` is checked to hold a certificate:
    // point it at a generated one).
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = dir.path().join("upstream-ca.pem");
    let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()]).expect("CA");
    std::fs::write(&pem, ca.cert.pem()).expect("write CA");
    assert!(full_text.contains("\"/etc/cargohold/upstream-ca.pem\""));
    let full_text = full_text.replace("/etc/cargohold/upstream-ca.pem", pem.to_str().expect("UTF-8 path"));
    let c = load(&full_text, "deploy/config.example.toml (uncommented)");
    assert!(c.tls.is_some());
    let upstream = c.registries["crates-io"].upstream.as_deref().expect("upstream");
    assert!(upstream.contains(".example/"), "{upstream}");
}

// ---------------------------------------------------------------------------------------------
// The example config through the real binary.

/// Runs the binary without any `CARGOHOLD_*` variable of the test's environment, plus `env`.
fn cargohold(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().to_ascii_uppercase().starts_with("CARGOHOLD_") {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("cargohold runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `print-config` line of `key` (`key = value   # source`).
fn line_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{text}"))
}

#[test]
fn binary_checks_and_prints_the_example_config() {
    let example = deploy_path("config.example.toml");
    let example = example.to_str().expect("utf-8 path");

    let out = cargohold(&["check-config", "--config", example], &[]);
    assert_eq!(out.status.code(), Some(0), "check-config: {}", stderr(&out));
    assert!(stdout(&out).contains("configuration is valid"), "{}", stdout(&out));

    let out = cargohold(&["print-config", "--config", example], &[]);
    assert_eq!(out.status.code(), Some(0), "print-config: {}", stderr(&out));
    let text = stdout(&out);
    let listen = line_of(&text, "listen");
    assert!(listen.contains(&format!("\"0.0.0.0:{PORT}\"")), "{listen}");
    assert!(listen.ends_with("# config file"), "{listen}");
    let data = line_of(&text, "data_dir");
    assert!(data.contains(DATA_DIR) && data.ends_with("# config file"), "{data}");
    for name in ["crates-io", "local", "private"] {
        assert!(
            text.contains(&format!("[registries.{name}]")),
            "{name} missing:\n{text}"
        );
    }
    // The printed configuration is itself a valid config file, equal to the example.
    assert_eq!(load(&text, "print-config output"), the_example());

    // The layers above the file: environment, then command line.
    let out = cargohold(
        &["print-config", "--config", example, "--listen", "127.0.0.1:9090"],
        &[
            ("CARGOHOLD_CACHE_MEMORY", "1GiB"),
            ("CARGOHOLD_LISTEN", "127.0.0.1:7070"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "print-config: {}", stderr(&out));
    let text = stdout(&out);
    let memory = line_of(&text, "memory");
    assert!(memory.starts_with(&format!("memory = {}", 1u64 << 30)), "{memory}");
    assert!(memory.ends_with("# environment (CARGOHOLD_CACHE_MEMORY)"), "{memory}");
    let listen = line_of(&text, "listen");
    assert!(
        listen.contains("127.0.0.1:9090") && listen.ends_with("# command line"),
        "{listen}"
    );
}

#[test]
fn binary_check_config_names_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf-8 path").to_owned()
    };

    // An unknown key stops parsing at once, so each is checked on its own.
    for (text, key) in [
        (format!("listen = \"0.0.0.0:{PORT}\"\ncolour = \"blue\"\n"), "colour"),
        ("[limits]\nmax_body_size = \"1MiB\"\n".to_owned(), "max_body_size"),
        (
            "[registries.local]\nkind = \"hosted\"\nmirror_of = \"crates-io\"\n".to_owned(),
            "mirror_of",
        ),
    ] {
        let file = write("unknown.toml", &text);
        let out = cargohold(&["check-config", "--config", &file], &[]);
        assert_eq!(out.status.code(), Some(64), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("unknown field `{key}`")),
            "{}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("valid"), "{}", stdout(&out));
    }

    // Every validation problem is listed in one run, each with its key.
    let file = write(
        "broken.toml",
        r#"
listen = "0.0.0.0:8080"
shutdown_grace = "soon"

[limits]
max_crate_size = "ten"

[cache]
disk = "lots"

[registries.crates-io]
kind = "proxy"
index_ttl = "often"
upstreams = ["crates-io"]

[registries.Team_Crates]
kind = "hosted"

[registries.local]
kind = "hosted"
upstream = "sparse+https://mirror.example/index/"
upstreams = ["crates-io", "missing"]
"#,
    );
    let problems = [
        ("shutdown_grace", "bad duration"),
        ("limits.max_crate_size", "bad size"),
        ("cache.disk", "bad size"),
        ("registries.crates-io.index_ttl", "bad duration"),
        ("registries.crates-io.upstreams", "proxy with `upstreams`"),
        ("registries.Team_Crates.name", "bad registry name"),
        ("registries.local.upstream", "hosted with `upstream`"),
        ("registries.local.upstreams", "upstream naming a missing registry"),
        ("limits.max_connections", "bad number from the environment"),
    ];
    let env = [("CARGOHOLD_LIMITS_MAX_CONNECTIONS", "many")];
    for command in ["check-config", "print-config"] {
        let out = cargohold(&[command, "--config", &file], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{command}: {err}");
        for (key, what) in problems {
            assert!(
                err.contains(&format!("- {key}: ")),
                "{command}: {what} (`{key}`) not listed:\n{err}"
            );
        }
        assert!(err.contains("`missing`"), "{err}");
        assert!(err.contains("CARGOHOLD_LIMITS_MAX_CONNECTIONS"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// YAML: the Kubernetes manifests and compose.yaml.

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read deploy/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn load_yaml(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("deploy/{rel} is not YAML: {e}"))
}

/// The one document of `rel`, checked to be of `kind`.
fn manifest(rel: &str, kind: &str) -> Yaml {
    let mut docs = load_yaml(rel);
    assert_eq!(docs.len(), 1, "deploy/{rel}: one document expected");
    let doc = docs.remove(0);
    assert_eq!(doc["kind"].as_str(), Some(kind), "deploy/{rel}");
    doc
}

/// The value at a dotted path (`spec.template.spec.containers.0.ports`); numbers index arrays.
/// Panics with the path when it is missing.
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    let mut cur = y;
    for seg in path.split('.') {
        cur = match seg.parse::<usize>() {
            Ok(i) if cur.is_array() => &cur[i],
            _ => &cur[seg],
        };
        assert!(!cur.is_badvalue(), "`{path}` not found (at `{seg}`)");
    }
    cur
}

fn at_str<'a>(y: &'a Yaml, path: &str) -> &'a str {
    at(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn at_int(y: &Yaml, path: &str) -> i64 {
    at(y, path)
        .as_i64()
        .unwrap_or_else(|| panic!("`{path}` is not an integer"))
}

fn at_vec<'a>(y: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(y, path).as_vec().unwrap_or_else(|| panic!("`{path}` is not a list"))
}

fn find_by<'a>(list: &'a [Yaml], key: &str, value: &str) -> &'a Yaml {
    list.iter()
        .find(|y| y[key].as_str() == Some(value))
        .unwrap_or_else(|| panic!("no entry with {key} = {value}"))
}

/// A Kubernetes quantity in bytes (`512Mi`, `64Gi`).
fn k8s_bytes(q: &str) -> u64 {
    assert!(q.ends_with('i'), "use binary units in the manifests: {q}");
    units::parse_size(&format!("{q}B")).unwrap_or_else(|e| panic!("{e}"))
}

fn secs(text: &str) -> Duration {
    units::parse_duration(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The config in the ConfigMap.
fn configmap_config() -> (Yaml, Config) {
    let cm = manifest("k8s/configmap.yaml", "ConfigMap");
    let text = at(&cm, "data")["config.toml"]
        .as_str()
        .expect("data.\"config.toml\" holds the config")
        .to_owned();
    let config = load(&text, "deploy/k8s/configmap.yaml config.toml");
    load(&uncomment(&text), "deploy/k8s/configmap.yaml config.toml (uncommented)");
    (cm, config)
}

fn healthz() -> &'static str {
    let path = Route::Healthz.template();
    assert_eq!(route(&Method::GET, path), Ok(Route::Healthz));
    path
}

fn readyz() -> &'static str {
    let path = Route::Readyz.template();
    assert_eq!(route(&Method::GET, path), Ok(Route::Readyz));
    path
}

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&deploy_path(""), &mut files);
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(deploy_path(""))
                .expect("under deploy/")
                .display()
                .to_string()
        })
        .collect();
    for want in [
        "compose.yaml",
        "k8s/configmap.yaml",
        "k8s/service.yaml",
        "k8s/statefulset.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "deploy/{want} missing: {names:?}");
    }
    for name in &names {
        let docs = load_yaml(name);
        assert!(!docs.is_empty(), "deploy/{name} is empty");
        for doc in docs {
            assert!(doc.is_hash(), "deploy/{name}: a document is not a mapping");
        }
    }
}

#[test]
fn configmap_config_is_the_example() {
    let (cm, config) = configmap_config();
    assert_eq!(
        config,
        the_example(),
        "deploy/k8s/configmap.yaml and deploy/config.example.toml differ"
    );
    assert_eq!(config.listen.port(), PORT);
    assert_eq!(config.data_dir, Path::new(DATA_DIR));
    assert_eq!(at_str(&cm, "metadata.name"), "cargohold-config");
}

#[test]
fn statefulset_and_service_agree_with_the_config() {
    let (cm, config) = configmap_config();
    let sts = manifest("k8s/statefulset.yaml", "StatefulSet");
    assert_eq!(at_int(&sts, "spec.replicas"), 1, "one process holds the store");
    let pod = at(&sts, "spec.template.spec");
    let c = find_by(at_vec(pod, "containers"), "name", "cargohold");

    // The port, by number and by name.
    let port = find_by(at_vec(c, "ports"), "name", "http");
    assert_eq!(at_int(port, "containerPort"), i64::from(PORT));
    let resolves = |p: &Yaml| match p {
        Yaml::Integer(n) => *n == i64::from(PORT),
        Yaml::String(name) => name == "http",
        _ => false,
    };

    // Probes: liveness and startup on healthz, readiness on readyz, all on the port.
    for (probe, path) in [
        ("livenessProbe", healthz()),
        ("startupProbe", healthz()),
        ("readinessProbe", readyz()),
    ] {
        assert_eq!(at_str(c, &format!("{probe}.httpGet.path")), path, "{probe}");
        assert!(resolves(at(c, &format!("{probe}.httpGet.port"))), "{probe} port");
    }

    // The data directory on the claim, the config from the ConfigMap.
    let claim = at_str(&sts, "spec.volumeClaimTemplates.0.metadata.name");
    let mounts = at_vec(c, "volumeMounts");
    assert_eq!(at_str(find_by(mounts, "name", claim), "mountPath"), DATA_DIR);
    assert_eq!(config.data_dir, Path::new(DATA_DIR));
    let args: Vec<&str> = at_vec(c, "args").iter().filter_map(Yaml::as_str).collect();
    let pos = args.iter().position(|a| *a == "--config").expect("--config in args");
    assert_eq!(args.get(pos + 1), Some(&CONFIG_PATH));
    assert_eq!(args.first(), Some(&"serve"));
    let config_path = Path::new(CONFIG_PATH);
    let config_dir = config_path.parent().and_then(Path::to_str).expect("config dir");
    let config_mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(config_dir))
        .expect("a mount at the config directory");
    let volume = find_by(at_vec(pod, "volumes"), "name", at_str(config_mount, "name"));
    assert_eq!(at_str(volume, "configMap.name"), at_str(&cm, "metadata.name"));
    let item = at(volume, "configMap.items.0");
    assert_eq!(at_str(item, "key"), "config.toml");
    assert_eq!(
        Some(at_str(item, "path")),
        config_path.file_name().and_then(|n| n.to_str())
    );

    // Stop timeout above the grace period; non-root; sizes above the cache budgets.
    let termination = Duration::from_secs(at_int(pod, "terminationGracePeriodSeconds").unsigned_abs());
    assert!(
        termination > config.shutdown_grace,
        "terminationGracePeriodSeconds <= shutdown_grace"
    );
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert!(at_int(pod, "securityContext.runAsUser") > 0);
    assert_eq!(at(c, "securityContext.allowPrivilegeEscalation").as_bool(), Some(false));
    assert!(k8s_bytes(at_str(c, "resources.limits.memory")) > config.cache.memory_bytes);
    let storage = at_str(&sts, "spec.volumeClaimTemplates.0.spec.resources.requests.storage");
    assert!(
        k8s_bytes(storage) > config.cache.disk_bytes + config.cache.index_disk_bytes,
        "the volume must hold [cache] disk, [cache] index_disk and the store"
    );
    assert_eq!(
        at(pod, "enableServiceLinks").as_bool(),
        Some(false),
        "service links would inject CARGOHOLD_* variables"
    );

    // The Service: same port, selecting the pods.
    let svc = manifest("k8s/service.yaml", "Service");
    assert_eq!(at_str(&sts, "spec.serviceName"), at_str(&svc, "metadata.name"));
    let sp = &at_vec(&svc, "spec.ports")[0];
    assert_eq!(at_int(sp, "port"), i64::from(PORT));
    assert!(resolves(at(sp, "targetPort")), "Service targetPort");
    let labels = at(&sts, "spec.template.metadata.labels");
    for (k, v) in at(&svc, "spec.selector").as_hash().expect("selector") {
        assert_eq!(
            &labels[k.as_str().expect("label key")],
            v,
            "Service selector does not match the pods"
        );
    }
}

#[test]
fn compose_agrees_with_the_config() {
    let example = the_example();
    let doc = &load_yaml("compose.yaml")[0];
    let s = at(doc, "services.cargohold");

    let ports: Vec<&str> = at_vec(s, "ports").iter().filter_map(Yaml::as_str).collect();
    assert!(
        ports.iter().any(|p| p.ends_with(&format!("{PORT}:{PORT}"))),
        "ports {ports:?} do not publish {PORT}"
    );
    let volumes: Vec<&str> = at_vec(s, "volumes").iter().filter_map(Yaml::as_str).collect();
    let data = volumes
        .iter()
        .find_map(|v| v.strip_suffix(&format!(":{DATA_DIR}")))
        .unwrap_or_else(|| panic!("no volume at {DATA_DIR}: {volumes:?}"));
    assert!(
        !at(doc, &format!("volumes.{data}")).is_badvalue(),
        "`{data}` is a named volume"
    );
    let config = volumes
        .iter()
        .find_map(|v| v.strip_suffix(&format!(":{CONFIG_PATH}:ro")))
        .unwrap_or_else(|| panic!("no config mounted at {CONFIG_PATH}: {volumes:?}"));
    assert_eq!(config, "./config.example.toml");
    assert!(deploy_path(config).is_file());
    let command: Vec<&str> = at_vec(s, "command").iter().filter_map(Yaml::as_str).collect();
    assert_eq!(command, ["serve", "--config", CONFIG_PATH]);

    let test: Vec<&str> = at_vec(s, "healthcheck.test").iter().filter_map(Yaml::as_str).collect();
    assert!(
        test.iter().any(|a| a.ends_with(&format!(":{PORT}{}", healthz()))),
        "healthcheck {test:?}"
    );
    assert_eq!(at_str(s, "stop_signal"), "SIGTERM");
    assert!(secs(at_str(s, "stop_grace_period")) > example.shutdown_grace);
    assert_eq!(at_str(s, "build.dockerfile"), "deploy/Dockerfile");
    let public_url = at_str(s, "environment.CARGOHOLD_PUBLIC_URL");
    assert!(public_url.ends_with(&format!(":{PORT}")), "{public_url}");
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile and the systemd unit.

/// Dockerfile instructions (continuations joined, comments dropped) as (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (instr, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((current.as_str(), ""));
                out.push((instr.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The JSON-array form of an instruction's arguments.
fn json_args(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("`{args}` is not a JSON array: {e}"))
}

#[test]
fn dockerfile_agrees_with_the_config() {
    let instructions = dockerfile();
    let all = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let last = |name: &str| -> &str { all(name).last().copied().unwrap_or_else(|| panic!("no {name}")) };

    assert!(all("FROM").len() >= 2, "multi-stage build");
    assert!(
        all("RUN").iter().any(|r| r.contains("cargo build --release --locked")),
        "the build uses the lockfile"
    );
    let expose = all("EXPOSE");
    assert!(
        expose
            .iter()
            .any(|e| e.split_whitespace().any(|p| p == PORT.to_string())),
        "EXPOSE {expose:?} lacks {PORT}"
    );
    let volume = last("VOLUME");
    let volumes = if volume.starts_with('[') {
        json_args(volume)
    } else {
        volume.split_whitespace().map(str::to_owned).collect()
    };
    assert!(volumes.iter().any(|v| v == DATA_DIR), "VOLUME {volume}");
    let health = last("HEALTHCHECK");
    assert!(
        health.contains(&format!("127.0.0.1:{PORT}{}", healthz())),
        "HEALTHCHECK {health}"
    );
    assert_eq!(last("STOPSIGNAL"), "SIGTERM");
    let user = last("USER");
    let uid = user.split(':').next().unwrap_or(user);
    assert!(uid != "0" && uid != "root", "runs as root: USER {user}");
    assert_eq!(json_args(last("ENTRYPOINT")), ["cargohold"]);
    assert_eq!(json_args(last("CMD")), ["serve", "--config", CONFIG_PATH]);
    assert!(
        all("COPY")
            .iter()
            .any(|c| *c == format!("deploy/config.example.toml {CONFIG_PATH}")),
        "the image's config is the example"
    );
}

/// The unit's settings: key -> every value given (in order).
fn unit() -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read("cargohold.service").lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') || t.starts_with('[') {
            continue;
        }
        let (k, v) = t.split_once('=').unwrap_or_else(|| panic!("not a setting: {t}"));
        out.entry(k.trim().to_owned()).or_default().push(v.trim().to_owned());
    }
    out
}

#[test]
fn systemd_unit_agrees_with_the_config() {
    let example = the_example();
    let u = unit();
    let one = |k: &str| -> &str {
        match u.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: expected one value, got {other:?}"),
        }
    };

    let stop = one("TimeoutStopSec");
    let stop = if stop.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(stop.parse().expect("seconds"))
    } else {
        secs(stop)
    };
    assert!(
        stop > example.shutdown_grace,
        "TimeoutStopSec ({stop:?}) must exceed shutdown_grace ({:?})",
        example.shutdown_grace
    );
    assert_eq!(one("Type"), "simple");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("ExecStart").ends_with(&format!("cargohold serve --config {CONFIG_PATH}")));
    assert!(one("ExecReload").contains("-HUP $MAINPID"));
    assert_eq!(Path::new("/var/lib").join(one("StateDirectory")), example.data_dir);
    assert!(one("ReadWritePaths")
        .split_whitespace()
        .any(|p| Path::new(p) == example.data_dir));
    assert_ne!(one("User"), "root");
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(u["SystemCallFilter"].iter().any(|f| f == "@system-service"));
    assert_eq!(one("RestartPreventExitStatus"), "64", "a config error is not retried");
}

// ---------------------------------------------------------------------------------------------
// The client side.

#[test]
fn cargo_config_example_uses_the_declared_registries() {
    let example = the_example();
    let public_url = example.public_url.clone().expect("public_url");
    let text = read("cargo-config.example.toml");
    let client: toml::Value = toml::from_str(&text).expect("deploy/cargo-config.example.toml is TOML");
    let regs = client["registries"].as_table().expect("[registries]");

    let mut server_of = BTreeMap::new();
    let mut urls = BTreeSet::new();
    for (name, r) in regs {
        let index = r["index"].as_str().expect("index");
        assert!(urls.insert(index.to_owned()), "two registries share {index}");
        let server = index
            .strip_prefix(&format!("sparse+{public_url}/"))
            .and_then(|rest| rest.strip_suffix("/index/"))
            .unwrap_or_else(|| panic!("{name}: {index} is not sparse+<public_url>/<registry>/index/"));
        let spec = example
            .registries
            .get(server)
            .unwrap_or_else(|| panic!("{name} points at `{server}`, which the example does not declare"));
        server_of.insert(name.clone(), spec);
    }
    // The mirror: crates-io replaced by a [registries] entry that is a proxy.
    let mirror = client["source"]["crates-io"]["replace-with"]
        .as_str()
        .expect("replace-with");
    assert_eq!(server_of.get(mirror).map(|s| s.kind), Some(RegistryKind::Proxy));
    // The private registry and the merged view.
    assert!(server_of
        .values()
        .any(|s| s.kind == RegistryKind::Hosted && !s.upstreams.is_empty()));
    // Auth-required registries have a credential provider.
    let global = client
        .get("registry")
        .and_then(|r| r.get("global-credential-providers"))
        .and_then(toml::Value::as_array)
        .is_some_and(|a| !a.is_empty());
    for (name, spec) in &server_of {
        if spec.auth_required {
            assert!(
                global || regs[name.as_str()].get("credential-provider").is_some(),
                "{name} is auth-required but has no credential provider"
            );
        }
    }
    assert!(server_of.values().any(|s| s.auth_required), "no auth-required example");
}

// ---------------------------------------------------------------------------------------------
// The operations guide stays in step with the code.

#[test]
fn operations_guide_names_every_variable_metric_and_limit() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(&path).expect("docs/OPERATIONS.md");
    for key in KEYS {
        let var = env::env_var(key);
        assert!(
            doc.contains(&format!("| `{key}` | `{var}` |")),
            "{key} / {var} missing from the table"
        );
    }
    let rendered = cargohold::telemetry::METRICS.render();
    let metrics: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!metrics.is_empty());
    for m in metrics {
        assert!(doc.contains(&format!("`{m}`")), "metric {m} is not documented");
    }
    for limit in fields::<RawLimits>() {
        assert!(
            doc.contains(&format!("| `{limit}` |")),
            "[limits] {limit} is not documented"
        );
    }
    for file in [
        "config.example.toml",
        "cargo-config.example.toml",
        "cargohold.service",
        "Dockerfile",
        "compose.yaml",
        "compose.cluster.yaml",
        "cluster.example.toml",
    ] {
        assert!(
            deploy_path(file).is_file() && doc.contains(&format!("deploy/{file}")),
            "{file}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Several nodes: deploy/k8s/cluster/ and compose.cluster.yaml on PostgreSQL + S3.

/// The config of a ConfigMap manifest.
fn config_of(rel: &str) -> Config {
    let cm = manifest(rel, "ConfigMap");
    let text = at(&cm, "data")["config.toml"]
        .as_str()
        .expect("data.\"config.toml\" holds the config")
        .to_owned();
    load(&text, &format!("deploy/{rel} config.toml"))
}

/// The store settings of a node config: both shared, without credentials in them.
fn assert_shared_store(config: &Config, what: &str) {
    let db = config
        .store
        .database
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no database"));
    assert_eq!(db.expose(), db.redacted(), "{what}: a password in the database URL");
    assert!(config.store.s3.is_some(), "{what}: no S3 blobs");
}

#[test]
fn the_cluster_manifests_run_several_replicas_on_the_shared_store() {
    let config = config_of("k8s/cluster/configmap.yaml");
    assert_shared_store(&config, "k8s/cluster/configmap.yaml");
    assert!(!config.store.s3.as_ref().unwrap().allow_http);
    let dep = manifest("k8s/cluster/deployment.yaml", "Deployment");
    assert!(at_int(&dep, "spec.replicas") >= 2, "several replicas");
    let pod = at(&dep, "spec.template.spec");
    assert_eq!(at(pod, "enableServiceLinks").as_bool(), Some(false));
    assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
    let c = find_by(at_vec(pod, "containers"), "name", "cargohold");
    let args: Vec<&str> = at_vec(c, "args").iter().filter_map(Yaml::as_str).collect();
    assert_eq!(&args[..3], ["serve", "--config", CONFIG_PATH]);
    for (probe, path) in [("livenessProbe", healthz()), ("readinessProbe", readyz())] {
        assert_eq!(at_str(c, &format!("{probe}.httpGet.path")), path, "{probe}");
    }
    // The credentials: every variable the store needs, from the Secret.
    let secret = manifest("k8s/cluster/secret.yaml", "Secret");
    let from = at_str(&at_vec(c, "envFrom")[0], "secretRef.name");
    assert_eq!(from, at_str(&secret, "metadata.name"));
    for var in [
        "PGPASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "CARGOHOLD_ADMIN_TOKEN",
    ] {
        assert!(!at(&secret, "stringData")[var].is_badvalue(), "{var} not in the Secret");
    }
    // Local data on an emptyDir larger than the caches; the config from the ConfigMap.
    let mounts = at_vec(c, "volumeMounts");
    let data = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(DATA_DIR))
        .expect("a mount at the data dir");
    let volumes = at_vec(pod, "volumes");
    let vol = find_by(volumes, "name", at_str(data, "name"));
    assert!(k8s_bytes(at_str(vol, "emptyDir.sizeLimit")) > config.cache.disk_bytes + config.cache.index_disk_bytes);
    assert_eq!(config.data_dir, Path::new(DATA_DIR));
    let cfg = find_by(volumes, "name", "config");
    assert_eq!(at_str(cfg, "configMap.name"), "cargohold-cluster-config");
    let svc = manifest("k8s/cluster/service.yaml", "Service");
    let labels = at(&dep, "spec.template.metadata.labels");
    for (k, v) in at(&svc, "spec.selector").as_hash().expect("selector") {
        assert_eq!(&labels[k.as_str().expect("label key")], v);
    }
}

#[test]
fn the_cluster_compose_file_runs_two_nodes_on_postgres_and_s3() {
    let config = load(&read("cluster.example.toml"), "deploy/cluster.example.toml");
    assert_shared_store(&config, "deploy/cluster.example.toml");
    let s3 = config.store.s3.as_ref().unwrap();
    let doc = &load_yaml("compose.cluster.yaml")[0];
    for engine in ["postgres", "s3", "s3-bucket"] {
        assert!(!at(doc, "services")[engine].is_badvalue(), "no {engine} service");
    }
    // The bucket the config names is the one the init job makes.
    let init: Vec<&str> = at_vec(doc, "services.s3-bucket.entrypoint")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(init.concat().contains(&format!("/{}", s3.bucket)), "{init:?}");
    for node in ["node1", "node2"] {
        let s = at(doc, &format!("services.{node}"));
        let volumes: Vec<&str> = at_vec(s, "volumes").iter().filter_map(Yaml::as_str).collect();
        assert!(
            volumes.contains(&format!("./cluster.example.toml:{CONFIG_PATH}:ro").as_str()),
            "{node}: {volumes:?}"
        );
        for var in [
            "PGPASSWORD",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "CARGOHOLD_ADMIN_TOKEN",
        ] {
            assert!(!at(s, "environment")[var].is_badvalue(), "{node}: {var}");
        }
        assert!(!at(s, "depends_on.postgres").is_badvalue(), "{node} waits for postgres");
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/ci/: the pipeline examples of docs/CI.md.

/// What both CI examples must say, whatever the CI system.
fn check_ci_text(rel: &str) {
    let text = read(rel);
    // The server-side command that makes the publish token, as docs/CI.md gives it.
    assert!(
        text.contains("cargohold token create --user ci --scope publish --registry local --expires 30d"),
        "deploy/{rel}: the scoped, expiring token command"
    );
    // Source replacement through a config file: cargo has no environment variable for it.
    assert!(
        text.contains(r#"[source.crates-io]\nreplace-with = "cargohold-mirror""#),
        "deploy/{rel}: crates.io replaced by the proxy in CARGO_HOME/config.toml"
    );
    assert!(
        !text.contains("CARGO_SOURCE_"),
        "deploy/{rel}: cargo ignores CARGO_SOURCE_* variables"
    );
    // Only the placeholder host.
    for (i, _) in text.match_indices("://") {
        let host: String = text[i + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect();
        assert_eq!(host, "cargohold.example.internal", "deploy/{rel}: a real host name");
    }
    assert!(
        text.contains("cargo publish --locked --registry cargohold"),
        "deploy/{rel}"
    );
}

/// The two index variables: the hosted registry as `cargohold`, the proxy as `cargohold-mirror`.
fn check_ci_indexes(vars: &Yaml, rel: &str) {
    for (var, reg) in [
        ("CARGO_REGISTRIES_CARGOHOLD_INDEX", "local"),
        ("CARGO_REGISTRIES_CARGOHOLD_MIRROR_INDEX", "crates-io"),
    ] {
        assert_eq!(
            vars[var].as_str(),
            Some(format!("sparse+https://cargohold.example.internal/{reg}/index/").as_str()),
            "deploy/{rel}: {var}"
        );
    }
}

fn check_ci_cache_paths(paths: &[&str], rel: &str) {
    for want in ["registry/index/", "registry/cache/", "target/"] {
        assert!(
            paths.iter().any(|p| p.ends_with(want)),
            "deploy/{rel}: {want} is not cached: {paths:?}"
        );
    }
}

#[test]
fn github_actions_example_builds_through_the_proxy_and_publishes_with_a_token() {
    let rel = "ci/github-actions.yml";
    check_ci_text(rel);
    let docs = load_yaml(rel);
    assert_eq!(docs.len(), 1, "deploy/{rel}: one document");
    let wf = &docs[0];
    check_ci_indexes(at(wf, "env"), rel);
    assert!(!at(wf, "on.push.tags").is_badvalue(), "deploy/{rel}: publishes on tags");
    for job in ["test", "publish"] {
        let steps = at_vec(wf, &format!("jobs.{job}.steps"));
        let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
        assert!(
            runs.iter().any(|r| r.contains("replace-with = \"cargohold-mirror\"")),
            "deploy/{rel}: job {job} replaces crates.io"
        );
        let cache = steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/cache")))
            .unwrap_or_else(|| panic!("deploy/{rel}: job {job} has no cache step"));
        let paths: Vec<&str> = at_str(cache, "with.path").lines().collect();
        check_ci_cache_paths(&paths, rel);
        assert!(
            at_str(cache, "with.key").contains("hashFiles('**/Cargo.lock')"),
            "{rel}"
        );
    }
    assert_eq!(at_str(wf, "jobs.publish.needs"), "test");
    assert!(at_str(wf, "jobs.publish.if").contains("refs/tags/"), "{rel}");
    let steps = at_vec(wf, "jobs.publish.steps");
    let publish = steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.starts_with("cargo publish")))
        .expect("a cargo publish step");
    assert_eq!(
        at_str(publish, "env.CARGO_REGISTRIES_CARGOHOLD_TOKEN"),
        "${{ secrets.CARGOHOLD_PUBLISH_TOKEN }}"
    );
    // The token is given to the publish step alone, not to every job.
    assert!(at(wf, "env")["CARGO_REGISTRIES_CARGOHOLD_TOKEN"].is_badvalue());
}

#[test]
fn gitlab_ci_example_builds_through_the_proxy_and_publishes_with_a_token() {
    let rel = "ci/gitlab-ci.yml";
    check_ci_text(rel);
    let docs = load_yaml(rel);
    assert_eq!(docs.len(), 1, "deploy/{rel}: one document");
    let ci = &docs[0];
    let vars = at(ci, "variables");
    check_ci_indexes(vars, rel);
    let home = at_str(vars, "CARGO_HOME");
    assert!(
        home.starts_with("${CI_PROJECT_DIR}/"),
        "GitLab caches only the project dir: {home}"
    );
    let home_rel = home.trim_start_matches("${CI_PROJECT_DIR}/");
    let base = &ci[".cargohold"];
    assert!(!base.is_badvalue(), "deploy/{rel}: the `.cargohold` template");
    let before: Vec<&str> = at_vec(base, "before_script").iter().filter_map(Yaml::as_str).collect();
    assert!(
        before
            .iter()
            .any(|l| l.contains("replace-with = \"cargohold-mirror\"") && l.contains("$CARGO_HOME/config.toml")),
        "{before:?}"
    );
    for cache in [at(base, "cache"), at(ci, "publish.cache")] {
        let paths: Vec<&str> = at_vec(cache, "paths").iter().filter_map(Yaml::as_str).collect();
        check_ci_cache_paths(&paths, rel);
        assert!(
            paths.iter().all(|p| p.starts_with(home_rel) || *p == "target/"),
            "{paths:?}"
        );
    }
    assert_eq!(at_str(ci, "publish.cache.policy"), "pull");
    for job in ["test", "publish"] {
        assert_eq!(at_str(ci, &format!("{job}.extends")), ".cargohold");
    }
    assert!(at_str(&at_vec(ci, "publish.rules")[0], "if").contains("CI_COMMIT_TAG"));
    let script: Vec<&str> = at_vec(ci, "publish.script").iter().filter_map(Yaml::as_str).collect();
    assert!(
        script.contains(&"export CARGO_REGISTRIES_CARGOHOLD_TOKEN=\"$CARGOHOLD_PUBLISH_TOKEN\""),
        "{script:?}"
    );
    assert!(
        vars["CARGO_REGISTRIES_CARGOHOLD_TOKEN"].is_badvalue(),
        "the token only in the publish job"
    );
}
