//! The rollout gates' Prometheus reading (`cairn::backend::kubernetes::prometheus`)
//! against a real Prometheus scraping real `cairn serve` processes, labelled as
//! Kubernetes service discovery labels pods (`namespace`, `pod`): what the `cairn`
//! preset's queries answer for a revision is what its pods' own `/metrics` say, added
//! up, and a revision whose name is a prefix of another's doesn't count the other's
//! pods. Unreachable servers and refused queries come back as errors naming them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn::backend::kubernetes::prometheus::Prometheus;
use cairn::backend::kubernetes::traffic::parse_metrics;
use cairn::rollout::Stats;
use cairn::rollout_metrics::{MetricsValue, Revision};

use crate::process::Serving;
use crate::prometheus::Prometheus as PrometheusServer;
use crate::{agent, get, post, rows, trained};

const NAMESPACE: &str = "risk-serve";

fn metrics_value(toml_text: &str) -> MetricsValue {
    MetricsValue::of(&toml::from_str(toml_text).unwrap()).unwrap()
}

fn revision(service: &str) -> Revision<'_> {
    Revision {
        namespace: NAMESPACE,
        endpoint: "scorer",
        service,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_cairn_preset_reads_what_the_pods_of_a_revision_say() {
    let trained = trained();
    // Two pods of revision `scorer-blue-v1`, one of `scorer-blue-v10` (same prefix).
    let pods = [
        ("scorer-blue-v1-7d9f8c6b5-abcde", 30),
        ("scorer-blue-v1-7d9f8c6b5-fghij", 12),
        ("scorer-blue-v10-5c4b3a2d1-klmno", 7),
    ];
    let servers: Vec<Serving> = pods
        .iter()
        .map(|_| {
            Serving::spawn(
                &trained.dir,
                &["--listen", "127.0.0.1:0", "--name", "scorer"],
            )
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(Serving::addr).collect();
    for addr in &addrs {
        crate::wait_ready(*addr);
    }
    let server = PrometheusServer::start();
    server.set_targets(
        &pods
            .iter()
            .zip(&addrs)
            .map(|((pod, _), addr)| {
                let labels = BTreeMap::from([
                    ("namespace".to_string(), NAMESPACE.to_string()),
                    ("pod".to_string(), pod.to_string()),
                ]);
                (addr.to_string(), labels)
            })
            .collect::<Vec<_>>(),
    );
    server.wait_up(3, Duration::from_secs(20));

    let agent = agent();
    let (body, _) = rows(3, 7);
    let body = serde_json::json!({ "rows": body }).to_string();
    for ((_, n), addr) in pods.iter().zip(&addrs) {
        for _ in 0..*n {
            assert_eq!(post(&agent, *addr, &body).status, 200);
        }
        // A bad request is a 400: counted as a request, not as an error.
        assert_eq!(post(&agent, *addr, "{\"rows\": 1}").status, 400);
    }
    let direct = |range: std::ops::Range<usize>| {
        let mut total = Stats::default();
        for addr in &addrs[range] {
            let stats = parse_metrics(&get(&agent, *addr, "/metrics").body).unwrap();
            total.requests += stats.requests;
            total.errors += stats.errors;
            for (le, count) in stats.latency {
                match total.latency.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += count,
                    None => total.latency.push((le, count)),
                }
            }
        }
        total
    };
    let v1 = direct(0..2);
    let v10 = direct(2..3);
    assert_eq!((v1.requests, v1.errors), (44, 0), "{v1:?}");
    assert_eq!(v10.requests, 8);

    let gates = Prometheus::new(metrics_value(&format!(
        "prometheus = \"{}\"\n",
        server.url()
    )))
    .unwrap();
    let runtime = runtime();
    // Prometheus answers with its last scrape: wait (a few scrape intervals at most)
    // until it has seen the last requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (read_v1, read_v10) = loop {
        let read_v1 = runtime
            .block_on(gates.stats(&revision("scorer-blue-v1")))
            .unwrap();
        let read_v10 = runtime
            .block_on(gates.stats(&revision("scorer-blue-v10")))
            .unwrap();
        if (read_v1.requests, read_v10.requests) == (v1.requests, v10.requests)
            || Instant::now() > deadline
        {
            break (read_v1, read_v10);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(read_v1, v1, "Prometheus vs the pods' /metrics for v1");
    assert_eq!(read_v10, v10, "Prometheus vs the pods' /metrics for v10");
    assert!(
        read_v1.latency.len() > 3 && read_v1.latency.last().unwrap().0.is_infinite(),
        "{:?}",
        read_v1.latency
    );

    // A revision nothing scrapes reads as no traffic yet.
    let none = runtime
        .block_on(gates.stats(&revision("scorer-green-v2")))
        .unwrap();
    assert_eq!((none.requests, none.errors, none.latency.len()), (0, 0, 0));

    // A query Prometheus refuses comes back with Prometheus' reason.
    let bad = Prometheus::new(metrics_value(&format!(
        "prometheus = \"{}\"\nrequests = 'sum(rate(cairn_requests_total[1m]'\n",
        server.url()
    )))
    .unwrap();
    let err = runtime
        .block_on(bad.stats(&revision("scorer-blue-v1")))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "Prometheus refused the requests query `sum(rate(cairn_requests_total[1m]`: bad_data:"
        ),
        "{err}"
    );
    // A query that returns a range is not a count.
    let range = Prometheus::new(metrics_value(&format!(
        "prometheus = \"{}\"\nerrors = 'cairn_requests_total[1m]'\n",
        server.url()
    )))
    .unwrap();
    let err = runtime
        .block_on(range.stats(&revision("scorer-blue-v1")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("returned a matrix, not a vector"), "{err}");
    drop(servers);
}

#[test]
fn an_unreachable_prometheus_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gates = Prometheus::new(metrics_value(&format!(
        "prometheus = \"http://127.0.0.1:{port}\"\n"
    )))
    .unwrap();
    let err = runtime()
        .block_on(gates.stats(&revision("scorer-blue-v1")))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "Prometheus at http://127.0.0.1:{port} can't be reached:"
        )),
        "{err}"
    );
}
