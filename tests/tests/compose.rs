//! `docker-compose.yml` must agree with the defaults the code and tests use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use session_core::testing::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};
use yaml_rust2::{Yaml, YamlLoader};

fn compose() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml at the repository root");
    YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is valid YAML")
        .remove(0)
}

/// `scheme://user@host:port/db` → (user, host, port, db)
fn parse_url(url: &str) -> (String, String, u16, String) {
    let rest = url.split_once("://").unwrap().1;
    let (auth, hostpart) = match rest.split_once('@') {
        Some((a, h)) => (a.to_owned(), h),
        None => (String::new(), rest),
    };
    let (hostport, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap();
    (auth, host.to_owned(), port.parse().unwrap(), db.to_owned())
}

fn published_ports(service: &Yaml) -> Vec<(String, u16, u16)> {
    service["ports"]
        .as_vec()
        .expect("ports list")
        .iter()
        .map(|p| {
            let s = p.as_str().expect("ports are strings");
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [ip, host, container] => (
                    (*ip).to_owned(),
                    host.parse().unwrap(),
                    container.parse().unwrap(),
                ),
                [host, container] => (
                    "0.0.0.0".to_owned(),
                    host.parse().unwrap(),
                    container.parse().unwrap(),
                ),
                _ => panic!("unexpected port mapping {s}"),
            }
        })
        .collect()
}

fn env(service: &Yaml, key: &str) -> Option<String> {
    service["environment"][key].as_str().map(str::to_owned)
}

#[test]
fn postgres_service_matches_default_database_url() {
    let c = compose();
    let pg = &c["services"]["postgres"];
    assert!(!pg.is_badvalue(), "compose has a postgres service");
    let (user, host, port, db) = parse_url(DEFAULT_DATABASE_URL);
    let ports = published_ports(pg);
    assert!(
        ports
            .iter()
            .any(|(ip, h, ctr)| *h == port && *ctr == 5432 && ip == &host),
        "postgres must publish {host}:{port}, has {ports:?}"
    );
    assert_eq!(env(pg, "POSTGRES_USER").as_deref(), Some(user.as_str()));
    assert_eq!(env(pg, "POSTGRES_DB").as_deref(), Some(db.as_str()));
    // The default URL has no password, so the server must trust local connections.
    assert!(!user.contains(':'), "default URL carries no password");
    assert_eq!(
        env(pg, "POSTGRES_HOST_AUTH_METHOD").as_deref(),
        Some("trust")
    );
}

#[test]
fn redis_service_matches_default_redis_url() {
    let c = compose();
    let redis = &c["services"]["redis"];
    assert!(!redis.is_badvalue(), "compose has a redis service");
    let (_, host, port, _) = parse_url(DEFAULT_REDIS_URL);
    let ports = published_ports(redis);
    assert!(
        ports
            .iter()
            .any(|(ip, h, ctr)| *h == port && *ctr == 6379 && ip == &host),
        "redis must publish {host}:{port}, has {ports:?}"
    );
}

/// Resolves YAML merge keys (`<<: *anchor`) one level deep, as Docker Compose does.
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
fn three_instantcopy_nodes_behind_nginx_agree_with_each_other() {
    let c = compose();
    let services = &c["services"];
    let mut ips = Vec::new();
    for id in 1..=3 {
        let name = format!("node{id}");
        let node = Yaml::Hash(merged(&services[name.as_str()]));
        assert!(!node.is_badvalue(), "compose has {name}");
        let env = Yaml::Hash(merged(&node["environment"]));
        let get = |k: &str| {
            env[k]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {k} missing"))
                .to_owned()
        };
        assert_eq!(get("DEMO_NODE_ID"), id.to_string(), "{name}: node id");
        assert_eq!(get("DEMO_BACKEND__KIND"), "instantcopy");
        assert_eq!(get("DEMO_DEV"), "false", "{name}: production mode");
        assert!(
            get("SESSION_SECRET").contains("SESSION_SECRET"),
            "secret comes from the environment"
        );
        // No fixed addresses: every node advertises its service name and seeds with all of
        // them, on the cluster port it listens on.
        let port = get("DEMO_BACKEND__INSTANTCOPY__CLUSTER_ADDR")
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(
            get("DEMO_BACKEND__INSTANTCOPY__ADVERTISE_ADDR"),
            format!("{name}:{port}"),
            "{name}: advertise_addr"
        );
        let seeds = get("DEMO_BACKEND__INSTANTCOPY__SEEDS");
        let expected: Vec<String> = (1..=3).map(|n| format!("node{n}:{port}")).collect();
        assert_eq!(
            seeds.split(',').collect::<Vec<_>>(),
            expected,
            "{name}: seeds"
        );
        assert!(
            node["networks"]["backend"]["ipv4_address"].is_badvalue(),
            "{name}: no fixed container address"
        );
        let ip = name.clone();
        let app_port = get("DEMO_APP_ADDR").rsplit(':').next().unwrap().to_owned();
        ips.push(format!("{ip}:{app_port}"));
    }
    // nginx balances over exactly those app addresses.
    let nginx =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf"))
            .unwrap();
    let upstream: Vec<String> = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains(':'))
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(';')
                .to_owned()
        })
        .collect();
    assert_eq!(upstream, ips, "nginx upstream vs node addresses");
    let lb = &services["lb"];
    assert!(published_ports(lb).iter().any(|(_, h, _)| *h == 8080));
}
