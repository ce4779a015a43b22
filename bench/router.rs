//! Router lookup cost must not grow with the number of routes: a router of 10,000 routes should find a
//! route about as fast as one of 10. Criterion measures each size; the closing lines print the ratio of
//! the two, measured in the same run.

use std::borrow::Cow;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::Criterion;
// The router is internal to the crate and depends on nothing else in it, so the bench compiles its
// source directly instead of widening the crate's public API.
#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../src/router/mod.rs"]
mod router;

use router::{MatchInput, RouteSpec, Router, RouterMode, Vars};

const SIZES: [usize; 2] = [10, 10_000];

struct NoVars;

impl Vars for NoVars {
    fn var(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

/// `n` prefix routes (`/r{i}/*`) and `n` exact routes (`/e{i}`), as a host-less config would have.
/// Ids are zero-padded to one width for every size, so both routers are probed with paths of the
/// same length and only the number of routes differs.
fn build(n: usize) -> Router<usize> {
    let spec = |uri: String| RouteSpec {
        uris: vec![uri],
        ..RouteSpec::default()
    };
    let routes = (0..n)
        .flat_map(|i| {
            [
                (spec(format!("/r{i:05}/*")), i),
                (spec(format!("/e{i:05}")), n + i),
            ]
        })
        .collect();
    Router::new(routes, RouterMode::HostUri).expect("bench routes compile")
}

/// The two lookups measured for a router of `n` routes, both hitting a route in the middle.
fn paths(n: usize) -> [(&'static str, String); 2] {
    [
        ("prefix", format!("/r{:05}/users/42", n / 2)),
        ("exact", format!("/e{:05}", n / 2)),
    ]
}

fn find(router: &Router<usize>, path: &str) -> bool {
    let input = MatchInput {
        path,
        host: Some("api.example.com"),
        host_with_port: Some("api.example.com:9080"),
        method: "GET",
        remote_addr: IpAddr::from([127, 0, 0, 1]),
        vars: &NoVars,
    };
    router.find(&input).is_some()
}

fn bench_find(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_find");
    for n in SIZES {
        let router = build(n);
        for (kind, path) in paths(n) {
            assert!(find(&router, &path), "{path} should match");
            group.bench_function(format!("{kind}/{n}_routes"), |b| {
                b.iter(|| find(black_box(&router), black_box(&path)))
            });
        }
    }
    group.finish();
}

fn time_per_find(router: &Router<usize>, path: &str) -> Duration {
    const ITERATIONS: u32 = 200_000;
    for _ in 0..ITERATIONS / 10 {
        black_box(find(black_box(router), black_box(path)));
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        black_box(find(black_box(router), black_box(path)));
    }
    start.elapsed() / ITERATIONS
}

fn print_ratios() {
    let [small, large] = SIZES;
    let (small_router, large_router) = (build(small), build(large));
    for ((kind, small_path), (_, large_path)) in paths(small).into_iter().zip(paths(large)) {
        let small_time = time_per_find(&small_router, &small_path);
        let large_time = time_per_find(&large_router, &large_path);
        let ratio = large_time.as_secs_f64() / small_time.as_secs_f64().max(f64::MIN_POSITIVE);
        eprintln!(
            "router_find/{kind}: {large} routes {large_time:?}, {small} routes {small_time:?}, ratio {ratio:.2}"
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_find(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
