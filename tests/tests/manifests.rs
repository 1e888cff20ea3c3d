//! `manifests/`, the Helm chart, the image build file and the IAM policy,
//! checked offline:
//!
//! - every object validates strictly against the Kubernetes OpenAPI schemas
//!   (kubernetes-validate, which bundles them: nothing is fetched);
//! - the chart, rendered by Helm's own engine (helm-python-sdk binds Helm's
//!   Go library; Helm itself is not in Debian) with its default values,
//!   equals `manifests/` object for object;
//! - our own checks: every environment variable the manifests give ipamd is
//!   one it reads, the paths, socket, ports and capabilities agree with the
//!   binaries' defaults, the IAM policy allows exactly the EC2 calls the
//!   `ec2` provider makes, and the operator's guide documents every setting;
//! - `ipamd install-cni`, exec'd as the init container runs it, installs a
//!   plugin that works and a conflist it accepts.
//!
//! The Python tools live in a virtualenv made by `scripts/setup.sh`
//! (`VPC_CNI_TEST_VENV`, default `/opt/vpc-cni-test/venv`). No root needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipamd::known_env::{is_known, KNOWN_ENV};
use serde_json::{json, Value};
use vpc_cni_e2e::{bin_path, TempDir};

/// The Kubernetes versions validated against: the chart's minimum and the
/// newest schemas kubernetes-validate bundles.
const KUBE_VERSIONS: &[&str] = &["1.25.0", "1.37.0"];

/// The endpoint contract with ipamd's HTTP listener (VPC_CNI_METRICS_ADDR's
/// default port, aws-node's).
const METRICS_PORT: u64 = 61678;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("VPC_CNI_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/vpc-cni-test/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the offline Kubernetes validator \
         and Helm renderer into that virtualenv)",
        python.display()
    );
    python
}

/// Runs tests/tools/k8s_check.py; `Ok(stdout)` or `Err(stderr)`.
fn tool(args: &[&str]) -> Result<String, String> {
    let out = Command::new(venv_python())
        .arg(root().join("tests/tools/k8s_check.py"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("the virtualenv's python runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("manifests"))
        .expect("manifests/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "manifests/ holds the objects: {files:?}");
    files
}

fn manifests() -> Vec<Value> {
    let files = manifest_files();
    let args: Vec<&str> = std::iter::once("load")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = tool(&args).unwrap_or_else(|e| panic!("manifests/ does not parse: {e}"));
    serde_json::from_str::<Vec<Value>>(&out).expect("JSON from the tool")
}

fn render(values: Option<Value>) -> Result<Vec<Value>, String> {
    let chart = root().join("charts/vpc-cni").display().to_string();
    let values = values.map(|v| v.to_string());
    let mut args = vec!["render", chart.as_str(), "kube-system"];
    if let Some(v) = &values {
        args.push(v);
    }
    tool(&args).map(|out| serde_json::from_str(&out).expect("JSON from the tool"))
}

fn by_kind_name(docs: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut map = BTreeMap::new();
    for d in docs {
        let key = (
            d["kind"].as_str().expect("kind").to_string(),
            d["metadata"]["name"].as_str().expect("name").to_string(),
        );
        assert!(
            map.insert(key.clone(), d.clone()).is_none(),
            "{key:?} twice"
        );
    }
    map
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn pod_spec(docs: &[Value]) -> &Value {
    &find(docs, "DaemonSet", "vpc-cni")["spec"]["template"]["spec"]
}

fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    spec[list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

/// Writes documents as a multi-document YAML file (JSON is YAML).
fn write_docs(dir: &TempDir, name: &str, docs: &[Value]) -> String {
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    let path = dir.path().join(name);
    std::fs::write(&path, text.join("\n---\n")).expect("temp file");
    path.display().to_string()
}

fn validate(files: &[String]) -> Result<(), String> {
    for version in KUBE_VERSIONS {
        let mut args = vec!["validate", version];
        args.extend(files.iter().map(String::as_str));
        tool(&args)?;
    }
    Ok(())
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    validate(&manifest_files()).unwrap_or_else(|e| panic!("{e}"));
    // The validator does reject what the API server would.
    let mut broken = manifests();
    for d in &mut broken {
        if d["kind"] == "DaemonSet" {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                ["add"] = json!("NET_ADMIN");
            d["spec"]["template"]["spec"]["hostNetwork"] = json!("yes");
        }
    }
    let dir = TempDir::new();
    let e = validate(&[write_docs(&dir, "broken.yaml", &broken)]).unwrap_err();
    assert!(e.contains("DaemonSet/vpc-cni"), "{e}");
    // A key given twice is refused, as kubectl refuses it (YAML loaders
    // would quietly keep the last).
    let twice = dir.path().join("twice.yaml");
    std::fs::write(
        &twice,
        "kind: ConfigMap\ndata:\n  MAX_ENI: \"2\"\n  MAX_ENI: \"3\"\n",
    )
    .unwrap();
    let e = tool(&["load", &twice.display().to_string()]).unwrap_err();
    assert!(e.contains("duplicate key 'MAX_ENI'"), "{e}");
}

#[test]
fn chart_with_default_values_renders_exactly_the_manifests() {
    let rendered = by_kind_name(&render(None).unwrap_or_else(|e| panic!("{e}")));
    let manifests = by_kind_name(&manifests());
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        manifests.keys().collect::<Vec<_>>(),
        "the chart and manifests/ hold different objects"
    );
    for (key, want) in &manifests {
        assert_eq!(
            &rendered[key], want,
            "{key:?} differs between charts/vpc-cni (left) and manifests/ (right)"
        );
    }
    tool(&["lint", &root().join("charts/vpc-cni").display().to_string()])
        .unwrap_or_else(|e| panic!("helm lint: {e}"));
}

#[test]
fn chart_values_reach_the_configmap_and_bad_values_are_refused() {
    let docs = render(Some(json!({
        "warmPool": {
            "warmIpTarget": 5, "minimumIpTarget": 0, "warmEniTarget": null, "maxEni": 2,
            "enablePrefixDelegation": false, "warmPrefixTarget": 1,
            "policy": "adaptive", "releaseDelaySeconds": 60
        },
        "externalSnat": true,
        "mtu": 1500,
        "clusterName": "prod-1",
        "networkPolicy": { "source": "off", "mode": "strict" },
        "metricsPort": 9100,
        "updateStrategy": { "maxUnavailable": 1 },
        "serviceAccount": { "roleArn": "" },
        "image": { "repository": "registry.example/vpc-cni", "tag": "dev" },
        "extraConfig": { "VPC_CNI_LOG_LEVEL": "debug" }
    })))
    .unwrap_or_else(|e| panic!("{e}"));
    let data = &find(&docs, "ConfigMap", "vpc-cni-config")["data"];
    assert_eq!(
        data,
        &json!({
            "CLUSTER_NAME": "prod-1",
            "WARM_IP_TARGET": "5", "MINIMUM_IP_TARGET": "0", "MAX_ENI": "2",
            "ENABLE_PREFIX_DELEGATION": "false", "WARM_PREFIX_TARGET": "1",
            "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true",
            "VPC_CNI_WARM_POLICY": "adaptive", "VPC_CNI_RELEASE_DELAY_S": "60",
            "IP_COOLDOWN_PERIOD": "30", "AWS_VPC_ENI_MTU": "1500",
            "VPC_CNI_LOG_LEVEL": "debug", "VPC_CNI_METRICS_ADDR": ":9100",
            "VPC_CNI_POLICY_SOURCE": "off", "VPC_CNI_POLICY_MODE": "strict"
        })
    );
    let spec = pod_spec(&docs);
    let ipamd = container(spec, "containers", "ipamd");
    assert_eq!(ipamd["image"], "registry.example/vpc-cni:dev");
    assert_eq!(ipamd["readinessProbe"]["httpGet"]["port"], 9100);
    assert_eq!(
        find(&docs, "DaemonSet", "vpc-cni")["spec"]["updateStrategy"]["rollingUpdate"]
            ["maxUnavailable"],
        1
    );
    assert!(find(&docs, "ServiceAccount", "vpc-cni")["metadata"]
        .get("annotations")
        .is_none());
    let dir = TempDir::new();
    validate(&[write_docs(&dir, "custom.yaml", &docs)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unknown_env_names(&docs), Vec::<String>::new());
    ipamd_accepts(&docs).unwrap_or_else(|e| panic!("{e}"));

    for (values, named) in [
        (
            json!({"warmPool": {"warmIpTarget": "lots"}}),
            "warmIpTarget",
        ),
        (json!({"warmPool": {"warmIPTarget": 3}}), "warmIPTarget"),
        (json!({"mtu": 70000}), "mtu"),
        (json!({"externalSnat": "yes"}), "externalSnat"),
        (json!({"networkPolicy": {"source": "etcd"}}), "source"),
        (json!({"warmPool": {"policy": "smart"}}), "policy"),
        (json!({"clusterName": ""}), "clusterName"),
        (
            json!({"extraConfig": {"WARM_IP_TARGET": 5}}),
            "WARM_IP_TARGET",
        ),
    ] {
        let e = render(Some(values.clone())).unwrap_err();
        assert!(e.contains(named), "{values}: {e}");
    }
}

/// Environment variable names the DaemonSet's containers get (directly, or
/// as the keys of an `envFrom` ConfigMap) that ipamd does not read.
fn unknown_env_names(docs: &[Value]) -> Vec<String> {
    let spec = pod_spec(docs);
    let mut names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().expect("containers") {
            for e in c["env"].as_array().into_iter().flatten() {
                names.insert(e["name"].as_str().expect("env name").to_string());
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let cm = from["configMapRef"]["name"].as_str().expect("a ConfigMap");
                let data = find(docs, "ConfigMap", cm)["data"]
                    .as_object()
                    .expect("data");
                names.extend(data.keys().cloned());
            }
        }
    }
    names.into_iter().filter(|n| !is_known(n)).collect()
}

/// The environment the ipamd container gets (its `env` values and its
/// `envFrom` ConfigMap's data), checked by ipamd's own parsers: `serve`'s
/// configuration and `install-cni`'s options.
fn ipamd_accepts(docs: &[Value]) -> Result<(), String> {
    let spec = pod_spec(docs);
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().expect("containers") {
            let mut vars: Vec<(String, String)> = Vec::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let cm = from["configMapRef"]["name"].as_str().expect("a ConfigMap");
                for (k, v) in find(docs, "ConfigMap", cm)["data"]
                    .as_object()
                    .expect("data")
                {
                    vars.push((k.clone(), v.as_str().expect("string values").to_string()));
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(v) = e["value"].as_str() {
                    vars.push((e["name"].as_str().unwrap().to_string(), v.to_string()));
                }
            }
            ipamd::config::Config::from_vars(vars.clone()).map_err(|e| e.to_string())?;
            let args: Vec<String> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            if c["name"] == "install-cni" {
                ipamd::install_cni::Options::parse(&args, vars, "/usr/local/bin/vpc-cni".into())
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

#[test]
fn every_environment_variable_in_the_manifests_is_one_ipamd_reads_with_a_valid_value() {
    let mut docs = manifests();
    assert_eq!(unknown_env_names(&docs), Vec::<String>::new());
    ipamd_accepts(&docs).unwrap_or_else(|e| panic!("ipamd refuses manifests/: {e}"));
    let mut bad = docs.clone();
    for d in &mut bad {
        if d["kind"] == "ConfigMap" {
            d["data"]["WARM_ENI_TARGET"] = json!("one");
        }
    }
    let e = ipamd_accepts(&bad).unwrap_err();
    assert!(e.contains("WARM_ENI_TARGET") && e.contains("one"), "{e}");
    // The check would notice a misspelt key.
    for d in &mut docs {
        if d["kind"] == "ConfigMap" {
            d["data"]["WARM_IP_TARGETS"] = json!("5");
        }
    }
    assert_eq!(unknown_env_names(&docs), ["WARM_IP_TARGETS"]);
}

fn host_path_of<'a>(spec: &'a Value, container: &Value, mount_path: &str) -> (&'a str, Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == mount_path))
        .unwrap_or_else(|| panic!("{} mounts nothing at {mount_path}", container["name"]));
    let volume = spec["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
        .expect("the mount's volume");
    let path = volume["hostPath"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{mount_path} is not a hostPath"));
    (path, mount.clone())
}

#[test]
fn paths_socket_ports_and_capabilities_agree_with_the_binaries() {
    let docs = manifests();
    let spec = pod_spec(&docs);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
    let ipamd = container(spec, "containers", "ipamd");
    let init = container(spec, "initContainers", "install-cni");

    // ipamd's socket and state directory, at the same paths on the host and
    // in the container (the plugin, on the host, dials the same path).
    let config = ipamd::config::Config::from_vars(Vec::new()).expect("defaults are valid");
    assert_eq!(
        config.socket,
        Path::new(cni_plugin::config::DEFAULT_IPAMD_SOCKET),
        "plugin and daemon default to one socket"
    );
    let socket_dir = config
        .socket
        .parent()
        .expect("socket dir")
        .to_str()
        .unwrap();
    assert_eq!(host_path_of(spec, ipamd, socket_dir).0, socket_dir);
    let state_dir = config.state_dir.to_str().unwrap();
    assert_eq!(host_path_of(spec, ipamd, state_dir).0, state_dir);
    let (netns, mount) = host_path_of(spec, ipamd, "/var/run/netns");
    assert_eq!(netns, "/var/run/netns");
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    // aws-node's checkpoint (VPC_CNI_AWS_NODE_CHECKPOINT's default), for the
    // migration from aws-node; read only.
    let aws_node_dir = config
        .aws_node_checkpoint
        .parent()
        .and_then(Path::to_str)
        .expect("the checkpoint's directory");
    let (aws_node, mount) = host_path_of(spec, ipamd, aws_node_dir);
    assert_eq!(aws_node, aws_node_dir);
    assert_eq!(mount["readOnly"], true);

    // install-cni writes where kubelet reads.
    assert_eq!(
        init["command"],
        json!(["/usr/local/bin/ipamd", "install-cni"])
    );
    for (flag, host) in [
        ("--bin-dir=", ipamd::install_cni::DEFAULT_BIN_DIR),
        ("--conf-dir=", ipamd::install_cni::DEFAULT_CONF_DIR),
    ] {
        let arg = init["args"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .find(|a| a.starts_with(flag))
            })
            .unwrap_or_else(|| panic!("install-cni gets no {flag}"));
        assert_eq!(host_path_of(spec, init, &arg[flag.len()..]).0, host);
    }
    assert_eq!(ipamd["command"], json!(["/usr/local/bin/ipamd", "serve"]));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for bin in ["/usr/local/bin/ipamd", "/usr/local/bin/vpc-cni"] {
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY") && l.ends_with(bin)),
            "the image does not put a binary at {bin}"
        );
    }

    // Live tuning reads the ConfigMap the container's environment comes from.
    let config_path = ipamd["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "VPC_CNI_CONFIG_PATH"))
        .and_then(|e| e["value"].as_str())
        .expect("VPC_CNI_CONFIG_PATH");
    let mount = ipamd["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["mountPath"] == config_path))
        .expect("the config volume is mounted at VPC_CNI_CONFIG_PATH");
    let volume = spec["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
        .expect("volume");
    assert_eq!(
        volume["configMap"]["name"],
        ipamd["envFrom"][0]["configMapRef"]["name"]
    );

    // Probes and scraping on the endpoint ipamd serves.
    assert_eq!(ipamd["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(ipamd["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(ipamd["readinessProbe"]["httpGet"]["port"], METRICS_PORT);
    assert_eq!(ipamd["livenessProbe"]["httpGet"]["port"], METRICS_PORT);
    assert_eq!(ipamd["ports"][0]["containerPort"], METRICS_PORT);
    let annotations =
        &find(&docs, "DaemonSet", "vpc-cni")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], METRICS_PORT.to_string());

    // Only the capabilities ipamd needs; only the init container is privileged.
    let sc = &ipamd["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], json!(["NET_ADMIN", "SYS_ADMIN"]));
    assert!(sc.get("privileged").is_none_or(|p| p == false));
    assert_eq!(init["securityContext"]["privileged"], true);

    // The image the manifests run is this release's.
    let version = workspace_version();
    for c in [ipamd, init] {
        let image = c["image"].as_str().expect("image");
        assert!(
            image.ends_with(&format!(":{version}")),
            "{image} is not {version}"
        );
    }
    let chart = std::fs::read_to_string(root().join("charts/vpc-cni/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "{chart}"
    );
}

/// The Debian package that provides each program ipamd may run.
const PROGRAM_PACKAGES: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("conntrack", "conntrack"),
];

/// Programs the non-test code under `src` spawns (`Command::new("x")`).
fn spawned_programs(src: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("tests.rs") {
                let text = std::fs::read_to_string(&p).expect("source");
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for part in code.split("Command::new(\"").skip(1) {
                    if let Some(program) = part.split('"').next() {
                        found.insert(program.to_string());
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_image_has_every_program_ipamd_runs() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The runtime stage: from the last FROM on.
    let runtime = dockerfile.rsplit("\nFROM ").next().expect("a FROM");
    let installed: BTreeSet<&str> = runtime
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| !w.starts_with('-') && !["apt-get", "install", "&&"].contains(w))
        .collect();
    // The daemon and every crate linked into it (the demo is not in the image).
    let sources = [
        "ipamd/src",
        "crates/core/src",
        "crates/netlink/src",
        "crates/cloud/src",
        "crates/policy/src",
    ];
    let spawned: BTreeSet<String> = sources
        .iter()
        .flat_map(|s| spawned_programs(&root().join(s)))
        .collect();
    for program in spawned {
        let package = PROGRAM_PACKAGES
            .iter()
            .find(|(p, _)| *p == program)
            .map(|(_, pkg)| *pkg)
            .unwrap_or_else(|| {
                panic!("ipamd runs {program:?}: add its package to PROGRAM_PACKAGES")
            });
        assert!(
            installed.contains(package),
            "ipamd runs {program} but the image does not install {package}"
        );
    }
    // The scan itself: it finds a spawned program.
    let dir = TempDir::new();
    std::fs::write(
        dir.path().join("snat.rs"),
        "let c = Command::new(\"nft\").arg(\"-f\");\n#[cfg(test)] fn t() { Command::new(\"ping\"); }",
    )
    .unwrap();
    assert_eq!(
        spawned_programs(dir.path()).into_iter().collect::<Vec<_>>(),
        ["nft"]
    );
}

fn workspace_version() -> String {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let line = cargo
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find(|l| l.starts_with("version"))
        .expect("workspace version");
    line.split('"').nth(1).expect("quoted version").to_string()
}

// ---------------------------------------------------------------------------
// IAM policy vs the ec2 provider
// ---------------------------------------------------------------------------

/// `create_network_interface` → `CreateNetworkInterface`.
fn action_name(op: &str) -> String {
    op.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The operations aws-sdk-ec2 offers (one module per operation in its
/// source), from the version in Cargo.lock, in cargo's registry.
fn sdk_operations() -> BTreeSet<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"aws-sdk-ec2\""))
        .and_then(|p| p.lines().find(|l| l.starts_with("version")))
        .and_then(|l| l.split('"').nth(1))
        .expect("aws-sdk-ec2 is in Cargo.lock once the ec2 provider is");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    let dir = std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("{}: {e}", registry.display()))
        .map(|e| {
            e.expect("entry")
                .path()
                .join(format!("aws-sdk-ec2-{version}/src/operation"))
        })
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "aws-sdk-ec2 {version}'s source is not under {}",
                registry.display()
            )
        });
    std::fs::read_dir(dir)
        .expect("operation dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            p.is_dir()
                .then(|| p.file_name()?.to_str().map(str::to_string))
                .flatten()
        })
        .collect()
}

/// EC2 operations called (`.op(`) in the provider's non-test code.
fn provider_calls(dir: &Path, ops: &BTreeSet<String>) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("test") || name.contains("fixture") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for op in ops {
            if code.contains(&format!(".{op}(")) {
                calls.insert(action_name(op));
            }
        }
        // Tags given at creation are authorised as ec2:CreateTags (with
        // ec2:CreateAction naming the creating call), not by the call itself.
        if code.contains(".tag_specifications(") {
            calls.insert("CreateTags".to_string());
        }
    }
    calls
}

fn policy_actions(policy: &Value) -> BTreeSet<String> {
    assert_eq!(
        policy["Version"], "2012-10-17",
        "IAM's current policy grammar"
    );
    let mut actions = BTreeSet::new();
    for st in policy["Statement"].as_array().expect("statements") {
        assert_eq!(st["Effect"], "Allow");
        let resources = match &st["Resource"] {
            Value::String(r) => vec![r.as_str()],
            Value::Array(rs) => rs.iter().map(|r| r.as_str().expect("ARN")).collect(),
            other => panic!("Resource {other}"),
        };
        for r in resources {
            assert!(
                r == "*" || r.starts_with("arn:aws:ec2:*:*:") && r.ends_with("/*"),
                "{}: {r} is not an EC2 resource ARN pattern",
                st["Sid"]
            );
        }
        let list = match &st["Action"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
            other => panic!("Action {other}"),
        };
        for a in list {
            let name = a
                .strip_prefix("ec2:")
                .unwrap_or_else(|| panic!("{a} is not EC2"));
            assert!(!name.contains('*'), "no wildcard actions: {a}");
            actions.insert(name.to_string());
        }
    }
    actions
}

#[test]
fn iam_policy_allows_exactly_the_ec2_calls_the_provider_makes() {
    let policy: Value = serde_json::from_slice(
        &std::fs::read(root().join("manifests/iam/vpc-cni-policy.json")).expect("policy"),
    )
    .expect("the policy is JSON");
    let allowed = policy_actions(&policy);
    // Creating and changing ENIs is bound to the cluster's tag, whose value
    // is the CLUSTER_NAME ipamd tags its ENIs with.
    let docs = manifests();
    let cluster = &find(&docs, "ConfigMap", "vpc-cni-config")["data"]["CLUSTER_NAME"];
    let statement = |sid: &str| {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
            .clone()
    };
    assert_eq!(
        &statement("ManageOwnEnis")["Condition"]["StringEquals"]
            ["ec2:ResourceTag/cluster.k8s.amazonaws.com/name"],
        cluster
    );
    assert_eq!(
        &statement("CreateTaggedEni")["Condition"]["StringEquals"]
            ["aws:RequestTag/cluster.k8s.amazonaws.com/name"],
        cluster
    );

    let ec2_dir = root().join("crates/cloud/src/ec2");
    assert!(
        ec2_dir.is_dir(),
        "{} is where the ec2 provider lives",
        ec2_dir.display()
    );
    let ops = sdk_operations();
    assert!(ops.contains("create_network_interface"), "{ops:?}");
    let called = provider_calls(&ec2_dir, &ops);
    let missing: Vec<_> = called.difference(&allowed).collect();
    let unused: Vec<_> = allowed.difference(&called).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "manifests/iam/vpc-cni-policy.json vs the ec2 provider: called but not allowed {missing:?}; \
         allowed but never called {unused:?}"
    );
}

#[test]
fn operation_names_map_to_iam_actions() {
    assert_eq!(
        action_name("create_network_interface"),
        "CreateNetworkInterface"
    );
    assert_eq!(
        action_name("assign_private_ip_addresses"),
        "AssignPrivateIpAddresses"
    );
    let dir = TempDir::new();
    std::fs::write(
        dir.path().join("client.rs"),
        "let r = self.client.describe_instance_types().instance_types(t).send().await;\n\
         let e = c\n  .create_network_interface()\n  .subnet_id(s)\n  .tag_specifications(t);\n\
         #[cfg(test)] mod tests { fn f() { c.create_vpc(); } }",
    )
    .unwrap();
    let ops: BTreeSet<String> = [
        "describe_instance_types",
        "create_network_interface",
        "create_vpc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let called = provider_calls(dir.path(), &ops);
    assert_eq!(
        called.into_iter().collect::<Vec<_>>(),
        [
            "CreateNetworkInterface",
            "CreateTags",
            "DescribeInstanceTypes"
        ]
    );
}

// ---------------------------------------------------------------------------
// ipamd install-cni, as the init container runs it
// ---------------------------------------------------------------------------

#[test]
fn install_cni_installs_a_plugin_that_answers_and_a_conflist_it_accepts() {
    let dir = TempDir::new();
    let (bin, net, sys) = (
        dir.path().join("opt/cni/bin"),
        dir.path().join("etc/cni/net.d"),
        dir.path().join("proc/sys"),
    );
    for d in [&bin, &net, &sys.join("net/ipv4")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(sys.join("net/ipv4/ip_forward"), "0\n").unwrap();
    let install = |envs: &[(&str, &str)]| {
        Command::new(bin_path("ipamd"))
            .arg("install-cni")
            .arg(format!("--bin-dir={}", bin.display()))
            .arg(format!("--conf-dir={}", net.display()))
            .arg(format!("--proc-sys={}", sys.display()))
            .env_clear()
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("ipamd runs")
    };

    let bad = install(&[("AWS_VPC_ENI_MTU", "nine thousand")]);
    assert_eq!(bad.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("AWS_VPC_ENI_MTU") && msg.contains("nine thousand"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(&bin).unwrap().count(),
        0,
        "nothing installed"
    );
    assert_eq!(
        std::fs::read_dir(&net).unwrap().count(),
        0,
        "nothing written"
    );

    // Default --plugin: the vpc-cni beside the ipamd binary.
    let ok = install(&[("AWS_VPC_ENI_MTU", "8000")]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        std::fs::read(bin.join("vpc-cni")).unwrap(),
        std::fs::read(bin_path("vpc-cni")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(sys.join("net/ipv4/ip_forward")).unwrap(),
        "1"
    );
    let conflist: Value =
        serde_json::from_slice(&std::fs::read(net.join("10-vpc-cni.conflist")).unwrap()).unwrap();
    let mut entry = conflist["plugins"][0].clone();
    entry["cniVersion"] = conflist["cniVersion"].clone();
    entry["name"] = conflist["name"].clone();

    // The installed copy runs, as kubelet would exec it.
    let version = Command::new(bin.join("vpc-cni"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("the installed plugin runs");
    assert!(version.status.success());
    let answer: Value = serde_json::from_slice(&version.stdout).expect("VERSION answers JSON");
    let supported = answer["supportedVersions"]
        .as_array()
        .expect("supportedVersions");
    assert!(supported.contains(&conflist["cniVersion"]), "{answer}");
    let conf = cni_plugin::config::NetConf::from_value(entry).expect("the plugin accepts it");
    assert_eq!(conf.mtu, 8000);
    assert_eq!(
        conf.ipamd_socket,
        Path::new(cni_plugin::config::DEFAULT_IPAMD_SOCKET)
    );
}

// ---------------------------------------------------------------------------
// The operator's guide
// ---------------------------------------------------------------------------

#[test]
fn operators_guide_documents_every_setting_and_is_linked() {
    let guide = std::fs::read_to_string(root().join("docs/operators-guide.md"))
        .expect("docs/operators-guide.md");
    let missing: Vec<_> = KNOWN_ENV
        .iter()
        .filter(|n| !guide.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "settings the guide does not document: {missing:?}"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("docs/operators-guide.md"),
        "README links the guide"
    );
}
