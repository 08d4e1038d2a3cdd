//! The deployment files (`deploy/`) against the code: the manifests parse and hold the
//! properties the cluster needs, every setting the image and the StatefulSet give `ringlog`
//! is accepted by `ringlog serve --check-config` (the StatefulSet's start script run as the
//! kubelet would for a pod), the image builds with the README's command, and
//! `--check-config` itself checks without serving.
//!
//! No Docker engine or Kubernetes cluster is needed: the files are read, the start script runs
//! in the local `/bin/sh` with the built `ringlog` first on `PATH`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use yaml_rust2::{Yaml, YamlLoader};

const RINGLOG: &str = env!("CARGO_BIN_EXE_ringlog");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The manifests

/// Every YAML document of a file.
fn documents(relative: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The one document of `kind` in `relative`.
fn document(relative: &str, kind: &str) -> Yaml {
    let mut found: Vec<Yaml> =
        documents(relative).into_iter().filter(|d| d["kind"].as_str() == Some(kind)).collect();
    assert_eq!(found.len(), 1, "{relative}: one {kind}");
    found.remove(0)
}

fn str_of<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str().unwrap_or_else(|| panic!("{what} is not a string: {yaml:?}"))
}

fn int_of(yaml: &Yaml, what: &str) -> i64 {
    yaml.as_i64().unwrap_or_else(|| panic!("{what} is not an integer: {yaml:?}"))
}

fn list<'a>(yaml: &'a Yaml, what: &str) -> &'a [Yaml] {
    yaml.as_vec().unwrap_or_else(|| panic!("{what} is not a list: {yaml:?}"))
}

/// The entry of `items` whose `key` is `value` (a container by name, a port by name, ...).
fn named<'a>(items: &'a Yaml, key: &str, value: &str) -> &'a Yaml {
    list(items, key)
        .iter()
        .find(|item| item[key].as_str() == Some(value))
        .unwrap_or_else(|| panic!("no entry with {key} {value} in {items:?}"))
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn every_manifest_document_parses_and_every_kustomization_names_existing_files() {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut files);
    assert!(files.len() >= 6, "{files:?}");
    let mut kinds = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!docs.is_empty(), "{}: no document", file.display());
        for doc in &docs {
            let kind = str_of(&doc["kind"], "kind");
            str_of(&doc["apiVersion"], "apiVersion");
            kinds.push(kind.to_owned());
            if kind == "Kustomization" {
                let dir = file.parent().unwrap();
                let resources = doc["resources"].as_vec().into_iter().flatten();
                let patches = doc["patches"].as_vec().into_iter().flatten().map(|p| &p["path"]);
                for path in resources.chain(patches) {
                    let path = dir.join(str_of(path, "a kustomization's file"));
                    assert!(path.exists(), "{}: {} does not exist", file.display(), path.display());
                }
            } else {
                str_of(&doc["metadata"]["name"], "metadata.name");
            }
        }
    }
    for kind in ["StatefulSet", "Service", "PodDisruptionBudget", "Kustomization"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

const STATEFULSET: &str = "deploy/kubernetes/statefulset.yaml";
const SERVICES: &str = "deploy/kubernetes/service.yaml";

fn container(statefulset: &Yaml) -> &Yaml {
    named(&statefulset["spec"]["template"]["spec"]["containers"], "name", "ringlog")
}

fn container_port(container: &Yaml, name: &str) -> i64 {
    int_of(&named(&container["ports"], "name", name)["containerPort"], "containerPort")
}

#[test]
fn the_statefulset_is_three_parallel_nodes_behind_a_headless_service() {
    let set = document(STATEFULSET, "StatefulSet");
    let spec = &set["spec"];
    assert_eq!(int_of(&spec["replicas"], "replicas"), 3);
    assert_eq!(str_of(&spec["podManagementPolicy"], "podManagementPolicy"), "Parallel");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], pod_labels);

    let service_name = str_of(&spec["serviceName"], "serviceName");
    let services = documents(SERVICES);
    let headless = services
        .iter()
        .find(|s| s["metadata"]["name"].as_str() == Some(service_name))
        .expect("the StatefulSet's serviceName is a Service in service.yaml");
    assert_eq!(headless["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true));
    let client =
        services.iter().find(|s| s["metadata"]["name"].as_str() != Some(service_name)).expect("client");
    assert!(client["spec"]["clusterIP"].is_badvalue(), "the client Service balances: not headless");
    for service in &services {
        assert_eq!(&service["spec"]["selector"], pod_labels, "{service:?}");
        let grpc = named(&service["spec"]["ports"], "name", "grpc");
        assert_eq!(str_of(&grpc["targetPort"], "targetPort"), "grpc");
    }

    let pdb = document("deploy/kubernetes/pdb.yaml", "PodDisruptionBudget");
    assert_eq!(int_of(&pdb["spec"]["maxUnavailable"], "maxUnavailable"), 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
}

#[test]
fn the_statefulset_probes_grpc_health_on_its_port_and_keeps_data_on_its_claim() {
    let set = document(STATEFULSET, "StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let container = container(&set);
    let grpc_port = container_port(container, "grpc");

    let probe = |name: &str| -> (i64, String) {
        let grpc = &container[name]["grpc"];
        let port = int_of(&grpc["port"], &format!("{name}.grpc.port"));
        (port, grpc["service"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(probe("readinessProbe"), (grpc_port, "log.v1.Log".to_owned()));
    assert_eq!(probe("livenessProbe"), (grpc_port, String::new()));
    assert_eq!(probe("startupProbe"), (grpc_port, String::new()));

    let claim = &list(&set["spec"]["volumeClaimTemplates"], "volumeClaimTemplates")[0];
    let claim_name = str_of(&claim["metadata"]["name"], "claim name");
    assert!(claim["spec"]["resources"]["requests"]["storage"].as_str().is_some());
    let mount = named(&container["volumeMounts"], "name", claim_name);
    assert_eq!(str_of(&mount["mountPath"], "mountPath"), "/var/lib/ringlog");

    // The server waits 30 s for open calls before it closes the log (`Server::shutdown_grace`).
    let grace = int_of(&pod["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    assert!(grace > 30, "terminationGracePeriodSeconds {grace} does not cover a shutdown");

    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    let uid = int_of(&security["runAsUser"], "runAsUser");
    assert_ne!(uid, 0);
    assert_eq!(uid.to_string(), dockerfile().user_uid(), "the pod runs as the image's user");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));

    for resource in ["cpu", "memory"] {
        assert!(container["resources"]["requests"][resource].as_str().is_some(), "no {resource} request");
    }
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile

/// One instruction: its keyword and its text, continuation lines joined.
struct Instruction {
    keyword: String,
    text: String,
}

struct Dockerfile {
    /// The build stages, each a list of instructions starting with its FROM.
    stages: Vec<Vec<Instruction>>,
}

fn dockerfile() -> Dockerfile {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
                continue;
            }
            None => pending.push_str(line),
        }
        let full = std::mem::take(&mut pending);
        let (keyword, text) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let instruction = Instruction { keyword: keyword.to_uppercase(), text: text.trim().to_owned() };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
    }
    Dockerfile { stages }
}

impl Dockerfile {
    fn last(&self, keyword: &str) -> &str {
        let stage = self.stages.last().expect("a stage");
        let found = stage.iter().rev().find(|i| i.keyword == keyword);
        &found.unwrap_or_else(|| panic!("no {keyword} in the final stage")).text
    }

    fn user_uid(&self) -> &str {
        self.last("USER").split(':').next().unwrap()
    }

    /// The final stage's environment (`ENV K=V K2=V2`).
    fn env(&self) -> Vec<(String, String)> {
        let stage = self.stages.last().unwrap();
        let mut env = Vec::new();
        for instruction in stage.iter().filter(|i| i.keyword == "ENV") {
            for pair in instruction.text.split_whitespace() {
                let (key, value) = pair.split_once('=').expect("ENV KEY=VALUE");
                env.push((key.to_owned(), value.trim_matches('"').to_owned()));
            }
        }
        env
    }

    /// The final stage's ENTRYPOINT, in its exec (JSON) form.
    fn entrypoint(&self) -> Vec<String> {
        json_strings(self.last("ENTRYPOINT"))
    }
}

/// `["a", "b"]` as strings (the exec form of ENTRYPOINT and CMD; no escapes in ours).
fn json_strings(text: &str) -> Vec<String> {
    let inner = text.trim().strip_prefix('[').and_then(|t| t.strip_suffix(']')).expect("exec form");
    inner.split(',').map(|s| s.trim().trim_matches('"').to_owned()).collect()
}

/// The `cargo build ...` command in `text` (up to `&&`, `;`, a comment or the line's end).
fn cargo_builds(text: &str) -> Vec<String> {
    text.match_indices("cargo build")
        .map(|(at, _)| {
            let rest = &text[at..];
            let end =
                ["&&", ";", "#", "\n"].iter().filter_map(|stop| rest.find(stop)).min().unwrap_or(rest.len());
            rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

#[test]
fn the_image_builds_with_the_readmes_command_and_runs_ringlog_serve_as_a_user() {
    let docker = dockerfile();
    assert_eq!(docker.stages.len(), 2, "a build stage and a run stage");
    let build = &docker.stages[0];
    assert!(build[0].text.starts_with("rust:"), "builds on a Rust image: {}", build[0].text);
    let runs: String = build.iter().filter(|i| i.keyword == "RUN").map(|i| format!("{}\n", i.text)).collect();
    let image_builds = cargo_builds(&runs);
    assert_eq!(image_builds.len(), 1, "{runs}");

    let readme = read("README.md");
    let readme_builds = cargo_builds(&readme);
    assert!(!readme_builds.is_empty(), "the README shows no cargo build");
    for command in &readme_builds {
        assert_eq!(command, &image_builds[0], "the image builds unlike the README");
    }
    // `cargo run <the same flags> -- serve`, the README's first command, builds the same.
    let run = readme.lines().find_map(|l| l.trim().strip_prefix("cargo run ")).expect("README: cargo run");
    let run_flags = run.split(" -- ").next().unwrap().trim();
    assert_eq!(format!("cargo build {run_flags}"), image_builds[0]);

    let final_stage = &docker.stages[1];
    assert!(final_stage[0].text.contains("-slim"), "runs on a slim base: {}", final_stage[0].text);
    assert!(final_stage.iter().any(|i| i.keyword == "COPY" && i.text.starts_with("--from=")));
    assert_eq!(docker.entrypoint(), ["ringlog", "serve"]);
    assert_eq!(json_strings(&format!("[{}]", docker.last("VOLUME").replace(' ', ","))), ["/var/lib/ringlog"]);
    let uid = docker.user_uid();
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "USER {uid}: a numeric non-root uid");
}

/// Whether a `.dockerignore` pattern (of the forms ours uses) leaves `path` out.
fn ignored(pattern: &str, path: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("**/*") {
        return path.ends_with(suffix);
    }
    let dir = pattern.strip_suffix('/').expect("patterns are `dir/` or `**/*.ext`");
    path == dir || path.starts_with(&format!("{dir}/"))
}

fn source_files(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !relative.ends_with("target") {
                source_files(root, &path, found);
            }
        } else {
            found.push(relative);
        }
    }
}

#[test]
fn the_build_context_leaves_out_build_output_and_data_but_no_source() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for left_out in ["target/debug/ringlog", "ringlog-data/00000000000000000000.store", "certs/ca-key.pem"] {
        assert!(patterns.iter().any(|p| ignored(p, left_out)), "{left_out} is in the build context");
    }
    let root = repo();
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for dir in ["engine", "service", "cluster", "benches", "proto"] {
        source_files(&root, &root.join(dir), &mut needed);
    }
    for path in &needed {
        assert!(!patterns.iter().any(|p| ignored(p, path)), "{path} is left out of the build context");
    }
}

// ---------------------------------------------------------------------------------------------
// The settings, as `ringlog serve --check-config` takes them

/// Kubernetes' `$(VAR)` expansion: a variable defined in `env` is replaced, `$$` is `$`, and
/// anything else is left as it is.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after_dollar) = after.strip_prefix('$') {
            out.push('$');
            rest = after_dollar;
        } else if let Some(name_and_rest) = after.strip_prefix('(')
            && let Some(close) = name_and_rest.find(')')
            && let Some(value) = env.get(&name_and_rest[..close])
        {
            out.push_str(value);
            rest = &name_and_rest[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A pod of the StatefulSet, as the kubelet would start it.
struct Pod {
    name: String,
    namespace: String,
    /// Where the ConfigMap ringlog-node-ids is mounted (its `mountPath` replaced).
    node_ids_dir: Option<PathBuf>,
    /// Environment entries added by a patch (the mTLS overlay), replacing same-named ones.
    patch_env: Vec<Yaml>,
}

impl Pod {
    fn new(name: &str) -> Pod {
        // Not `default`: the namespace must come from the pod, not be written in.
        Pod { name: name.to_owned(), namespace: "logs".to_owned(), node_ids_dir: None, patch_env: Vec::new() }
    }

    /// The container's environment: the image's, then the container's entries in order (each
    /// expanded against those before it, as Kubernetes does).
    fn env(&self, container: &Yaml) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = dockerfile().env().into_iter().collect();
        let mut entries: Vec<Yaml> = list(&container["env"], "env").to_vec();
        for patched in &self.patch_env {
            match entries.iter_mut().find(|e| e["name"] == patched["name"]) {
                Some(entry) => *entry = patched.clone(),
                None => entries.push(patched.clone()),
            }
        }
        for entry in &entries {
            let name = str_of(&entry["name"], "env name").to_owned();
            let value = match entry["value"].as_str() {
                Some(value) => expand(value, &env),
                None => match str_of(&entry["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath") {
                    "metadata.name" => self.name.clone(),
                    "metadata.namespace" => self.namespace.clone(),
                    other => panic!("the test knows no fieldRef {other}"),
                },
            };
            env.insert(name, value);
        }
        if let Some(dir) = &self.node_ids_dir {
            env.insert("NODE_IDS_DIR".into(), dir.display().to_string());
        }
        env
    }

    /// Runs the container's command with `--check-config` appended, `ringlog` being the
    /// built binary.
    fn check_config(&self, set: &Yaml) -> (Output, BTreeMap<String, String>) {
        let container = container(set);
        let env = self.env(container);
        let image = dockerfile().entrypoint();
        let strings = |key: &str| {
            container[key].as_vec().map(|v| v.iter().map(|s| str_of(s, key).to_owned()).collect())
        };
        let command: Vec<String> = strings("command").unwrap_or(image);
        let mut argv: Vec<String> = command.iter().map(|arg| expand(arg, &env)).collect();
        argv.extend(strings("args").unwrap_or_default().iter().map(|arg| expand(arg, &env)));
        argv.push("--check-config".into());

        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(RINGLOG, bin.path().join("ringlog")).unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.path().display());
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", path)
            .envs(&env)
            .output()
            .unwrap();
        (output, env)
    }
}

/// The settings `--check-config` printed (a TOML file), after checking that it succeeded.
fn printed_settings(output: &Output) -> toml::Table {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "--check-config failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.parse().unwrap_or_else(|e| panic!("the printed settings are not TOML: {e}\n{stdout}"))
}

fn setting<'a>(settings: &'a toml::Table, key: &str) -> &'a toml::Value {
    settings.get(key).unwrap_or_else(|| panic!("no `{key}` in {settings:?}"))
}

/// Every `RINGLOG_*` variable in `env` is a setting that took its value (clap ignores an
/// unknown variable: a misspelt one would otherwise go unnoticed).
fn assert_env_applied(env: &BTreeMap<String, String>, settings: &toml::Table) {
    let mut applied = 0;
    for (name, value) in env {
        let Some(key) = name.strip_prefix("RINGLOG_") else { continue };
        let key = key.to_lowercase().replace('_', "-");
        let printed = match setting(settings, &key) {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(&printed, value, "{name}");
        applied += 1;
    }
    assert!(applied >= 2, "{env:?}");
}

/// `ID=ringlog-N.ringlog.NAMESPACE.svc.cluster.local:PORT,...` for `(pod, id)` pairs.
fn peers_of(set: &Yaml, namespace: &str, names: &[(&str, u64)]) -> String {
    let port = container_port(container(set), "grpc");
    let peers: Vec<String> = names
        .iter()
        .map(|(name, id)| format!("{id}={name}.ringlog.{namespace}.svc.cluster.local:{port}"))
        .collect();
    peers.join(",")
}

#[test]
fn the_images_environment_is_accepted_and_listens_on_every_interface() {
    let docker = dockerfile();
    let env: BTreeMap<String, String> = docker.env().into_iter().collect();
    let entrypoint = docker.entrypoint();
    assert_eq!(entrypoint[0], "ringlog");
    let output = Command::new(RINGLOG)
        .args(&entrypoint[1..])
        .arg("--check-config")
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    let settings = printed_settings(&output);
    assert_env_applied(&env, &settings);
    assert!(setting(&settings, "addr").as_str().unwrap().starts_with("0.0.0.0:"));
    assert_eq!(setting(&settings, "data-dir").as_str(), Some("/var/lib/ringlog"));
}

#[test]
fn pod_0_of_the_statefulset_starts_as_node_1_of_three_with_every_setting_accepted() {
    let set = document(STATEFULSET, "StatefulSet");
    let (output, env) = Pod::new("ringlog-0").check_config(&set);
    let settings = printed_settings(&output);
    assert_env_applied(&env, &settings);
    assert_eq!(setting(&settings, "node-id").as_integer(), Some(1));
    let peers = peers_of(&set, "logs", &[("ringlog-0", 1), ("ringlog-1", 2), ("ringlog-2", 3)]);
    assert_eq!(setting(&settings, "peers").as_str(), Some(peers.as_str()));

    let container = container(&set);
    let port = |key: &str| {
        let addr: std::net::SocketAddr = setting(&settings, key).as_str().unwrap().parse().unwrap();
        assert!(addr.ip().is_unspecified(), "{key} {addr}: not every interface");
        i64::from(addr.port())
    };
    assert_eq!(port("addr"), container_port(container, "grpc"));
    assert_eq!(port("metrics-addr"), container_port(container, "metrics"));
    let data_dir = setting(&settings, "data-dir").as_str().unwrap();
    let mount = list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(data_dir));
    assert!(mount.is_some(), "data-dir {data_dir} is not a volume");
    assert_eq!(setting(&settings, "durability").as_str(), Some("always"));
}

#[test]
fn a_pod_past_the_first_voters_joins_under_its_ordinal_plus_one_with_itself_in_peers() {
    let set = document(STATEFULSET, "StatefulSet");
    let (output, _) = Pod::new("ringlog-3").check_config(&set);
    let settings = printed_settings(&output);
    assert_eq!(setting(&settings, "node-id").as_integer(), Some(4));
    let names = [("ringlog-0", 1), ("ringlog-1", 2), ("ringlog-2", 3), ("ringlog-3", 4)];
    assert_eq!(setting(&settings, "peers").as_str(), Some(peers_of(&set, "logs", &names).as_str()));
}

#[test]
fn a_pod_named_in_the_node_ids_config_map_starts_under_that_id() {
    let set = document(STATEFULSET, "StatefulSet");
    let container = container(&set);
    let mount = named(&container["volumeMounts"], "name", "node-ids");
    let env = Pod::new("ringlog-1").env(container);
    assert_eq!(env["NODE_IDS_DIR"], str_of(&mount["mountPath"], "mountPath"), "the script reads the mount");
    let volume = named(&set["spec"]["template"]["spec"]["volumes"], "name", "node-ids");
    assert_eq!(
        volume["configMap"]["optional"].as_bool(),
        Some(true),
        "no ConfigMap is needed until a replacement"
    );

    let ids = tempfile::tempdir().unwrap();
    std::fs::write(ids.path().join("ringlog-1"), "7\n").unwrap();
    std::fs::write(ids.path().join("ringlog-2"), "9\n").unwrap();
    let pod = Pod { node_ids_dir: Some(ids.path().to_owned()), ..Pod::new("ringlog-1") };
    let settings = printed_settings(&pod.check_config(&set).0);
    assert_eq!(setting(&settings, "node-id").as_integer(), Some(7));
    // The old id keeps its entry (harmless: it is no member any more); the new one is added.
    let names = [("ringlog-0", 1), ("ringlog-1", 2), ("ringlog-2", 3), ("ringlog-1", 7)];
    assert_eq!(setting(&settings, "peers").as_str(), Some(peers_of(&set, "logs", &names).as_str()));

    let pod = Pod { node_ids_dir: Some(ids.path().to_owned()), ..Pod::new("ringlog-0") };
    assert_eq!(setting(&printed_settings(&pod.check_config(&set).0), "node-id").as_integer(), Some(1));
}

/// `ringlog certs` in `dir`: ca.pem, server.pem, server-key.pem, and `client`'s pair.
fn certs(dir: &Path, client: &str) {
    let out =
        Command::new(RINGLOG).args(["certs", "--out"]).arg(dir).args(["--client", client]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_mtls_overlay_mounts_its_secret_where_its_settings_point_and_they_are_accepted() {
    let set = document(STATEFULSET, "StatefulSet");
    let patch = document("deploy/kubernetes/mtls/statefulset-mtls.yaml", "StatefulSet");
    let patched = container(&patch);
    let mount = named(&patched["volumeMounts"], "name", "tls");
    let mount_path = str_of(&mount["mountPath"], "mountPath");
    let volume = named(&patch["spec"]["template"]["spec"]["volumes"], "name", "tls");
    assert_eq!(volume["secret"]["secretName"].as_str(), Some("ringlog-tls"));
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        // The kubelet's gRPC probes have no TLS: the patch must remove them.
        assert!(patched[probe]["grpc"].is_null(), "{probe} still probes gRPC in plaintext");
        assert_eq!(
            int_of(&patched[probe]["tcpSocket"]["port"], "port"),
            container_port(container(&set), "grpc")
        );
    }

    // The Secret's files, where the test can write them.
    let secret = tempfile::tempdir().unwrap();
    let made = tempfile::tempdir().unwrap();
    certs(made.path(), "ringlog-node");
    for (from, key) in [("server.pem", "tls.crt"), ("server-key.pem", "tls.key"), ("ca.pem", "ca.crt")] {
        std::fs::copy(made.path().join(from), secret.path().join(key)).unwrap();
    }
    let local = |value: &str| {
        let file = value.strip_prefix(mount_path).unwrap_or_else(|| panic!("{value} is not in the Secret"));
        secret.path().join(file.trim_start_matches('/')).display().to_string()
    };
    let mut patch_env = list(&patched["env"], "env").to_vec();
    let mut tls = Vec::new();
    for entry in &mut patch_env {
        let name = str_of(&entry["name"], "name").to_owned();
        let value = local(str_of(&entry["value"], "value"));
        tls.push((name.clone(), value.clone()));
        let mut hash = yaml_rust2::yaml::Hash::new();
        hash.insert(Yaml::String("name".into()), Yaml::String(name));
        hash.insert(Yaml::String("value".into()), Yaml::String(value));
        *entry = Yaml::Hash(hash);
    }
    assert_eq!(tls.len(), 3, "certificate, key and client CA: {tls:?}");

    // The files and settings on their own (a single node): read and valid, mutual TLS.
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(RINGLOG)
        .args(["serve", "--check-config", "--data-dir"])
        .arg(data.path())
        .env_clear()
        .envs(tls.iter().cloned())
        .output()
        .unwrap();
    printed_settings(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("# security: mutual tls\n"));

    // The whole pod: a cluster node with mutual TLS.
    let pod = Pod { patch_env, ..Pod::new("ringlog-0") };
    let (output, env) = pod.check_config(&set);
    assert_env_applied(&env, &printed_settings(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("# security: mutual tls\n"));
}

// ---------------------------------------------------------------------------------------------
// `--check-config` itself

fn check_config(args: &[&str], current_dir: &Path) -> Output {
    Command::new(RINGLOG)
        .args(["serve", "--check-config"])
        .args(args)
        .current_dir(current_dir)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_a_good_cluster_config_without_creating_binding_or_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    certs(&dir.path().join("certs"), "alice");
    std::fs::write(dir.path().join("acl.txt"), "alice, produce\nalice, consume\n").unwrap();
    // A port that is taken: serving would fail to bind it, checking does not bind.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let config = format!(
        "addr = \"{taken}\"\ndata-dir = \"data\"\ndurability = \"always\"\nnode-id = 2\n\
         peers = \"1=a.example:8400,2=b.example:8400,3=c.example:8400\"\nmetrics-addr = \"127.0.0.1:9400\"\n"
    );
    std::fs::write(dir.path().join("ringlog.toml"), config).unwrap();

    let output = check_config(&["--config", "ringlog.toml", "--raft-heartbeat-ms", "300"], dir.path());
    let settings = printed_settings(&output);
    assert_eq!(setting(&settings, "node-id").as_integer(), Some(2));
    assert_eq!(setting(&settings, "raft-heartbeat-ms").as_integer(), Some(300), "flags over the file");
    assert_eq!(setting(&settings, "addr").as_str(), Some(taken.to_string().as_str()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("# cluster: node 2 of first voters 1=a.example:8400,"), "{stdout}");
    assert!(stdout.contains("# data-dir: does not exist yet"), "{stdout}");
    assert!(!dir.path().join("data").exists(), "--check-config created the data directory");

    // The security files are read and checked too.
    let tls = [
        "--tls-cert-file",
        "certs/server.pem",
        "--tls-key-file",
        "certs/server-key.pem",
        "--tls-client-ca-file",
        "certs/ca.pem",
        "--acl-file",
        "acl.txt",
        "--data-dir",
        "data",
    ];
    let output = check_config(&tls, dir.path());
    printed_settings(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("# security: mutual tls + acl (2 rules)\n"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "the key's contents are printed");
    assert!(!dir.path().join("data").exists());
    drop(held);
}

#[test]
fn check_config_rejects_a_bad_setting_naming_it_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    certs(&dir.path().join("certs"), "alice");
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    std::fs::write(dir.path().join("acl.txt"), "alice, fly\n").unwrap();
    let peers = "1=a.example:8400,2=b.example:8400";
    let cases: [(&[&str], &str); 6] = [
        (&["--peers", peers, "--node-id", "4"], "invalid setting `node-id`: 4 is not in peers"),
        (&["--peers", "1=nowhere"], "invalid setting `peers`"),
        (&["--peers", peers, "--node-id", "1", "--raft-heartbeat-ms", "2000"], "`raft-election-timeout-ms`"),
        (&["--log-level", "ringlog=loud"], "invalid setting `log-level`"),
        (&["--tls-cert-file", "not-a-cert.pem", "--tls-key-file", "certs/server-key.pem"], "tls-cert-file"),
        (&["--acl-file", "acl.txt"], "acl file acl.txt: line 1"),
    ];
    for (args, named) in cases {
        let output = check_config(&[args, &["--data-dir", "data"][..]].concat(), dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: printed settings");
        assert!(!dir.path().join("data").exists(), "{args:?}: created the data directory");
    }
}
