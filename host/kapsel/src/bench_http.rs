//! `kapsel bench http`: requests/s and latency through a node's ingress to
//! the `http-hello` sample service, and in the same run the same load
//! against a minimal native Rust HTTP server (hyper, answering the same
//! body) so that the ratio between the two is read from one run.
//!
//! It starts `kapsel serve` (with its embedded node, the ingress on a free
//! port), creates `--pods` serving pods of `http-hello` behind a Service,
//! waits until the ingress answers, and then, for `--seconds` each, keeps
//! `--connections` HTTP/1.1 keep-alive connections busy — first against
//! the native server (its own two-thread runtime in this process, as the
//! ingress has its own process), then through the ingress. Only 200s with
//! the expected body count; anything else is an error and reported.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::bench::{push_image, start_server, wait_for_node};

#[derive(Debug, clap::Args)]
pub struct HttpBenchArgs {
    /// Serving pods behind the Service (on the embedded node).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pods: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Seconds of load against each target.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one target answered under load.
struct Load {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

impl Load {
    fn report(&self) -> Value {
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "requests": self.ok,
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.ok as f64 / self.elapsed.as_secs_f64(),
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": self.histogram.max() as f64 / 1000.0,
        })
    }
}

/// The body the native server answers: what `http-hello` answers for a pod named `native`.
const NATIVE_BODY: &str = "Hello from native\n";

/// Starts the native baseline on its own two-thread runtime; returns its address.
fn start_native() -> anyhow::Result<std::net::SocketAddr> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        let mut response = hyper::Response::new(Full::new(Bytes::from_static(NATIVE_BODY.as_bytes())));
                        response.headers_mut().insert(hyper::header::CONTENT_TYPE, "text/plain".parse().expect("a header value"));
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    Ok(address)
}

/// Keeps `connections` connections to `address` busy with `GET path` (with
/// `host`) for `seconds`; a 200 whose body starts with `expected` counts.
async fn load(
    address: std::net::SocketAddr,
    host: &str,
    path: &str,
    expected: &str,
    connections: u64,
    seconds: u64,
) -> anyhow::Result<Load> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (stop, errors) = (stop.clone(), errors.clone());
        let (host, path, expected) = (host.to_string(), path.to_string(), expected.to_string());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A connection for as long as it lasts; a new one after a failure.
                let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                tokio::spawn(connection);
                while !stop.load(Ordering::Relaxed) {
                    let request = hyper::Request::get(path.as_str())
                        .header(hyper::header::HOST, host.as_str())
                        .body(Empty::<Bytes>::new())
                        .expect("a request");
                    let sent = Instant::now();
                    let answered = match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            match response.into_body().collect().await {
                                Ok(body) => status == hyper::StatusCode::OK && body.to_bytes().starts_with(expected.as_bytes()),
                                Err(_) => false,
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                    if answered {
                        ok += 1;
                        histogram.saturating_record(sent.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (histogram, ok)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut ok = 0;
    for worker in workers {
        let (worker_histogram, worker_ok) = worker.await?;
        histogram.add(worker_histogram).expect("same bounds");
        ok += worker_ok;
    }
    Ok(Load { histogram, ok, errors: errors.load(Ordering::Relaxed), elapsed })
}

pub async fn run(args: HttpBenchArgs) -> anyhow::Result<ExitCode> {
    let (_server, client) = start_server(None).await?;
    let node = wait_for_node(&client).await?;
    let ingress = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(kapsel_api::kinds::node::INGRESS_ANNOTATION))
        .and_then(Value::as_str)
        .context("the embedded node publishes no ingress address")?;
    let ingress: std::net::SocketAddr =
        ingress.trim_start_matches("http://").parse().with_context(|| format!("the ingress address {ingress:?}"))?;
    let namespace = "bench-http";
    client.post("/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await?;
    push_image(&client, namespace, "http-hello", kapsel_node::HTTP_HELLO).await?;
    for i in 0..args.pods {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("hello-{i}"), "labels": {"app": "hello"}},
            "spec": {"containers": [{"name": "main", "image": "http-hello:1", "resources": {"limits": {"memory": "256Mi"}},
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        client.post(&format!("/api/v1/namespaces/{namespace}/pods"), &pod).await.context("creating a serving pod")?;
    }
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80}]}});
    client.post(&format!("/api/v1/namespaces/{namespace}/services"), &service).await.context("creating the service")?;
    let host = format!("hello.{namespace}");
    // Ready when every pod has answered through the ingress.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < args.pods as usize {
        anyhow::ensure!(Instant::now() < deadline, "the service did not answer from all {} pods within 60 s", args.pods);
        if let Ok(body) = probe(ingress, &host).await {
            answered.insert(body);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let native_address = start_native()?;
    let native = load(native_address, "native", "/", NATIVE_BODY, args.connections, args.seconds).await?;
    let through_ingress = load(ingress, &host, "/", "Hello from hello-", args.connections, args.seconds).await?;
    let ratio = through_ingress.ok as f64 / through_ingress.elapsed.as_secs_f64() / (native.ok as f64 / native.elapsed.as_secs_f64());
    let report = json!({
        "benchmark": "http",
        "pods": args.pods,
        "connections": args.connections,
        "seconds": args.seconds,
        "ingress": through_ingress.report(),
        "native": native.report(),
        "ingress_to_native": ratio,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "kapsel bench http: {} pods of http-hello behind a Service, {} connections, {} s each",
            args.pods, args.connections, args.seconds
        );
        for (name, load) in [("through the ingress", &through_ingress), ("native hyper server", &native)] {
            let r = load.report();
            println!(
                "  {name:<20} {:>9.0} requests/s   p50 {:.2} ms   p99 {:.2} ms   ({} errors)",
                r["requests_per_second"].as_f64().unwrap_or_default(),
                r["p50_ms"].as_f64().unwrap_or_default(),
                r["p99_ms"].as_f64().unwrap_or_default(),
                load.errors
            );
        }
        println!("  ingress / native: {ratio:.2}");
    }
    Ok(ExitCode::SUCCESS)
}

/// One request through the ingress; the body when it is a 200.
async fn probe(ingress: std::net::SocketAddr, host: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(ingress).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/").header(hyper::header::HOST, host).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == hyper::StatusCode::OK, "status {}", response.status());
    Ok(String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned())
}
