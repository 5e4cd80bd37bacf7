//! The deployment files (`deploy/k8s/`, `docker-compose.yml`) must start nodes that the demo
//! accepts: every environment variable they set is fed, as Kubernetes or Compose would expand
//! it, to `demo-app check-config`, which refuses unknown keys and bad values exactly as `serve`
//! does. The wiring between the objects (selectors, ports, probes, seeds) is checked too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const TEST_SECRET: &str = "3f1c0b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615e4d3";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(rel)
}

fn load_all(rel: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Every object the kustomization lists, in order.
fn k8s_objects() -> Vec<Yaml> {
    let kust = load_all("deploy/k8s/kustomization.yaml").remove(0);
    let resources = kust["resources"].as_vec().expect("kustomization resources");
    assert!(!resources.is_empty());
    resources
        .iter()
        .flat_map(|r| load_all(&format!("deploy/k8s/{}", r.as_str().unwrap())))
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {y:?}"))
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .expect("a label map")
        .iter()
        .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
        .collect()
}

/// Kubernetes' `$(VAR)` expansion of an env value from the variables defined before it.
fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (k, v) in defined {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(
        !out.contains("$("),
        "{value}: refers to an undefined variable"
    );
    out
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Runs `demo-app check-config` with exactly `env` (and nothing else of this process's), through
/// `sh -c script` when the manifest starts the binary from a shell.
fn check_config(env: &BTreeMap<String, String>, script: Option<&str>) -> String {
    let bin = common::binary().display().to_string();
    let mut cmd = match script {
        Some(script) => {
            let script = script.replace(
                "/usr/local/bin/demo-app serve",
                &format!("{bin} check-config"),
            );
            assert!(
                script.contains("check-config"),
                "the command must exec demo-app serve: {script}"
            );
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
        None => {
            let mut c = Command::new(&bin);
            c.arg("check-config");
            c
        }
    };
    let out = cmd.env_clear().envs(env).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check-config refused the deployment's environment {env:?}:\n{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration ok"), "{stdout}");
    stdout
}

#[test]
fn k8s_statefulset_starts_nodes_the_demo_accepts_with_stable_ids_and_dns_seeds() {
    let objects = k8s_objects();
    let sts = find(&objects, "StatefulSet", "session-demo");
    let pod = &sts["spec"]["template"];
    let pod_labels = labels(&pod["metadata"]["labels"]);
    assert_eq!(labels(&sts["spec"]["selector"]["matchLabels"]), pod_labels);
    assert_eq!(
        pod["spec"]["enableServiceLinks"].as_bool(),
        Some(false),
        "no injected *_PORT variables"
    );

    let containers = pod["spec"]["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The environment as the kubelet builds it: downward API and Secret values filled in.
    let pod_ip = "10.244.1.17";
    let mut env = BTreeMap::new();
    let mut secret_refs = Vec::new();
    for var in c["env"].as_vec().unwrap() {
        let name = s(&var["name"]).to_owned();
        let from = &var["valueFrom"];
        let value = if let Some(v) = var["value"].as_str() {
            expand(v, &env)
        } else if from["fieldRef"]["fieldPath"].as_str() == Some("status.podIP") {
            pod_ip.to_owned()
        } else if let Some(secret) = from["secretKeyRef"]["name"].as_str() {
            secret_refs.push(secret.to_owned());
            TEST_SECRET.to_owned()
        } else {
            panic!("{name}: unexpected valueFrom {from:?}");
        };
        env.insert(name, value);
    }
    assert_eq!(
        env.get("SESSION_SECRET").map(String::as_str),
        Some(TEST_SECRET),
        "secret from a Secret"
    );
    assert!(
        secret_refs.iter().all(|n| n == "session-demo-secrets"),
        "{secret_refs:?}"
    );
    assert_eq!(env["DEMO_DEV"], "false");

    // The pod's ordinal becomes the node id: pod -2 is node 3.
    env.insert("HOSTNAME".into(), "session-demo-2".into());
    let command: Vec<&str> = c["command"].as_vec().unwrap().iter().map(s).collect();
    assert_eq!(&command[..2], ["/bin/sh", "-c"]);
    assert!(
        command[2].contains("exec "),
        "demo-app must be PID 1 to get SIGTERM"
    );
    let summary = check_config(&env, Some(command[2]));
    assert!(summary.contains("node 3 "), "{summary}");
    assert!(
        summary.contains(&format!("advertise {pod_ip}:7001")),
        "{summary}"
    );
    env.insert("HOSTNAME".into(), "session-demo-0".into());
    assert!(check_config(&env, Some(command[2])).contains("node 1 "));

    // Ports: the app port the probes use, the cluster port on TCP and UDP (gossip).
    let ports = c["ports"].as_vec().unwrap();
    let named = |n: &str| {
        ports
            .iter()
            .find(|p| p["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("container port {n}"))
    };
    let app_port = port_of(&env["DEMO_APP_ADDR"]);
    let cluster_port = port_of(&env["DEMO_BACKEND__INSTANTCOPY__CLUSTER_ADDR"]);
    assert_eq!(
        named("http")["containerPort"].as_i64(),
        Some(i64::from(app_port))
    );
    assert_eq!(
        named("cluster")["containerPort"].as_i64(),
        Some(i64::from(cluster_port))
    );
    assert_eq!(s(&named("cluster")["protocol"]), "TCP");
    assert_eq!(
        named("gossip")["containerPort"].as_i64(),
        Some(i64::from(cluster_port))
    );
    assert_eq!(s(&named("gossip")["protocol"]), "UDP");
    assert_eq!(
        port_of(&env["DEMO_BACKEND__INSTANTCOPY__ADVERTISE_ADDR"]),
        cluster_port
    );

    // Probes: readiness is /readyz (the initial sync), liveness is /healthz (the process).
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["port"]), "http");
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");

    // Seeds: the headless Service, which lists pods before they are ready, on the cluster port.
    let seeds = &env["DEMO_BACKEND__INSTANTCOPY__SEEDS"];
    let (seed_host, seed_port) = seeds.rsplit_once(':').unwrap();
    assert_eq!(seed_port.parse::<u16>().unwrap(), cluster_port);
    let service_name = s(&sts["spec"]["serviceName"]);
    assert_eq!(
        seed_host, service_name,
        "seeds name the StatefulSet's headless Service"
    );
    let peers = find(&objects, "Service", service_name);
    assert_eq!(s(&peers["spec"]["clusterIP"]), "None", "headless");
    assert_eq!(
        peers["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
    assert_eq!(labels(&peers["spec"]["selector"]), pod_labels);
    let protocols: Vec<(i64, &str)> = peers["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), s(&p["protocol"])))
        .collect();
    for proto in ["TCP", "UDP"] {
        assert!(
            protocols.contains(&(i64::from(cluster_port), proto)),
            "{protocols:?}"
        );
    }

    // Clients reach ready pods through the other Service.
    let front = find(&objects, "Service", "session-demo");
    assert_eq!(labels(&front["spec"]["selector"]), pod_labels);
    assert!(
        front["spec"]["clusterIP"].is_badvalue(),
        "a normal ClusterIP Service"
    );
    assert_eq!(s(&front["spec"]["ports"][0]["targetPort"]), "http");

    // One pod at a time: the PDB, and enough grace for the drain.
    let pdb = find(&objects, "PodDisruptionBudget", "session-demo");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
    assert_eq!(labels(&pdb["spec"]["selector"]["matchLabels"]), pod_labels);
    let drain = humantime_serde::re::humantime::parse_duration(
        &env["DEMO_BACKEND__INSTANTCOPY__DRAIN_TIMEOUT"],
    )
    .unwrap();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    // The preStop pause lets endpoint removal propagate before the app port closes; it
    // counts against the same grace period.
    let pre_stop = &c["lifecycle"]["preStop"]["exec"]["command"];
    let pre_stop: Vec<&str> = pre_stop
        .as_vec()
        .expect("a preStop exec command")
        .iter()
        .map(s)
        .collect();
    assert_eq!(pre_stop[0], "/bin/sleep", "{pre_stop:?}");
    let pause: u64 = pre_stop[1].parse().unwrap();
    assert!((1..=10).contains(&pause), "preStop pause {pause}s");
    assert!(
        grace as u64 > pause + drain.as_secs() + 10,
        "grace {grace}s vs preStop {pause}s + drain {drain:?}"
    );

    // The image's user and binary path match what the manifest assumes.
    let dockerfile = std::fs::read_to_string(repo_file("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("/usr/local/bin/demo-app"));
    let uid = pod["spec"]["securityContext"]["runAsUser"]
        .as_i64()
        .unwrap();
    assert!(
        dockerfile.contains(&format!("--uid {uid}")),
        "Dockerfile user vs runAsUser {uid}"
    );
}

/// Resolves YAML merge keys (`<<: *anchor`), as Docker Compose does.
fn merged(map: &Yaml) -> yaml_rust2::yaml::Hash {
    let mut out = yaml_rust2::yaml::Hash::new();
    if let Some(h) = map.as_hash() {
        if let Some(base) = h.get(&Yaml::String("<<".into())) {
            out.extend(merged(base));
        }
        for (k, v) in h {
            if k.as_str() != Some("<<") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[test]
fn compose_nodes_start_with_the_environment_compose_gives_them() {
    let compose = load_all("docker-compose.yml").remove(0);
    let services = &compose["services"];
    for id in 1..=3 {
        let name = format!("node{id}");
        let node = Yaml::Hash(merged(&services[name.as_str()]));
        let mut env = BTreeMap::new();
        for (k, v) in merged(&node["environment"]) {
            let value = s(&v).replace(
                "${SESSION_SECRET:?set SESSION_SECRET to 32+ random bytes}",
                TEST_SECRET,
            );
            assert!(!value.contains("${"), "{name}: unexpanded {value}");
            env.insert(s(&k).to_owned(), value);
        }
        let summary = check_config(&env, None);
        assert!(summary.contains(&format!("node {id} ")), "{summary}");
        assert!(
            summary.contains(&format!("advertise {name}:7001")),
            "{summary}"
        );
        // The health check is the readiness endpoint, probed by the binary itself (the image
        // has no curl).
        let test: Vec<&str> = node["healthcheck"]["test"]
            .as_vec()
            .unwrap()
            .iter()
            .map(s)
            .collect();
        assert_eq!(test[..3], ["CMD", "/usr/local/bin/demo-app", "probe"]);
        assert!(test[3].ends_with(&format!(":{}/readyz", port_of(&env["DEMO_APP_ADDR"]))));
    }
}

/// Answers one HTTP request with `status` and closes.
fn one_answer(status: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let body = r#"{"ready":false,"reason":"syncing"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn probe_exits_zero_only_on_200() {
    let probe = |url: String| {
        Command::new(common::binary())
            .args(["probe", "--timeout", "2", &url])
            .output()
            .unwrap()
    };
    let ok = probe(format!("http://{}/readyz", one_answer("200 OK")));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let not_ready = probe(format!(
        "http://{}/readyz",
        one_answer("503 Service Unavailable")
    ));
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_ready.stdout).contains("syncing"),
        "the reason is printed"
    );
    // Nothing listens on port 1 of loopback.
    let none = probe("http://127.0.0.1:1/readyz".into());
    assert_eq!(none.status.code(), Some(1));
}
