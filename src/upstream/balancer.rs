//! Node selection: weighted round robin (nginx's smooth algorithm, precomputed) and consistent hashing.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::Node;

/// Longest precomputed round-robin schedule; larger weight sums are scaled down first.
const MAX_SCHEDULE: u64 = 4096;
/// Virtual points per unit of weight on the hash ring.
const POINTS_PER_WEIGHT: u32 = 160;

/// What a `chash` upstream hashes (`hash_on` + `key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HashOn {
    /// An nginx/APISIX variable such as `remote_addr`, `uri` or `arg_id`.
    Vars(String),
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The authenticated consumer's name.
    Consumer,
    /// A template combining variables, e.g. `$host$uri`.
    VarsCombinations(String),
}

/// Picks the first node of each request.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// Walks a precomputed smooth-weighted schedule with one shared counter.
    RoundRobin {
        schedule: Vec<usize>,
        next: AtomicUsize,
    },
    /// A ring of `(point, node index)` sorted by point.
    Chash { on: HashOn, ring: Vec<(u64, usize)> },
}

impl Balancer {
    /// Builds the balancer of an upstream object; nodes of lower priority are only reached by retries.
    pub(crate) fn new(upstream: &Value, nodes: &[Node]) -> Balancer {
        let top = nodes
            .iter()
            .filter(|n| n.weight > 0)
            .map(|n| n.priority)
            .max();
        let eligible: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].weight > 0 && Some(nodes[i].priority) == top)
            .collect();
        if upstream.get("type").and_then(Value::as_str) == Some("chash") {
            let key = upstream
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("remote_addr")
                .to_owned();
            let on = match upstream
                .get("hash_on")
                .and_then(Value::as_str)
                .unwrap_or("vars")
            {
                "header" => HashOn::Header(key),
                "cookie" => HashOn::Cookie(key),
                "consumer" => HashOn::Consumer,
                "vars_combinations" => HashOn::VarsCombinations(key),
                _ => HashOn::Vars(key),
            };
            let mut ring = Vec::new();
            for &i in &eligible {
                let node = &nodes[i];
                for point in 0..node.weight.saturating_mul(POINTS_PER_WEIGHT).min(16_000) {
                    let label = format!("{}#{}", node.authority(), point);
                    ring.push((fnv1a(label.as_bytes()), i));
                }
            }
            ring.sort_unstable();
            return Balancer::Chash { on, ring };
        }
        Balancer::RoundRobin {
            schedule: smooth_schedule(nodes, &eligible),
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the node to try first, or `None` when no node is usable.
    pub(crate) fn pick(&self, hash_key: Option<&[u8]>) -> Option<usize> {
        match self {
            Balancer::RoundRobin { schedule, next } => {
                if schedule.is_empty() {
                    return None;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                Some(schedule[n % schedule.len()])
            }
            Balancer::Chash { ring, .. } => {
                if ring.is_empty() {
                    return None;
                }
                let point = fnv1a(hash_key.unwrap_or_default());
                let at = ring.partition_point(|(p, _)| *p < point);
                Some(ring[at % ring.len()].1)
            }
        }
    }

    /// What a `chash` balancer needs from the request, if anything.
    pub(crate) fn hash_on(&self) -> Option<&HashOn> {
        match self {
            Balancer::Chash { on, .. } => Some(on),
            Balancer::RoundRobin { .. } => None,
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one period so picking is a counter increment.
fn smooth_schedule(nodes: &[Node], eligible: &[usize]) -> Vec<usize> {
    let weights: Vec<u64> = eligible
        .iter()
        .map(|&i| u64::from(nodes[i].weight))
        .collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut weights: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        let scale = total.div_ceil(MAX_SCHEDULE);
        weights = weights.iter().map(|w| (w / scale).max(1)).collect();
    }
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += *w as i64;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        schedule.push(eligible[best]);
    }
    schedule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// FNV-1a, 64-bit: stable across runs and processes, so every gateway hashes a key to the same node.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the low bits up so nearby labels spread around the ring.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(host: &str, weight: u32) -> Node {
        Node {
            host: host.into(),
            port: 80,
            weight,
            priority: 0,
        }
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let nodes = vec![node("a", 5), node("b", 1), node("c", 1)];
        let b = Balancer::new(&json!({}), &nodes);
        let picks: Vec<usize> = (0..7).filter_map(|_| b.pick(None)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        // Smooth: the heavy node never runs more than... a, a, b, a, c, a, a in nginx's order.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_nodes_are_never_picked() {
        let nodes = vec![node("a", 0), node("b", 1)];
        let b = Balancer::new(&json!({}), &nodes);
        assert!((0..10).all(|_| b.pick(None) == Some(1)));
        let none = Balancer::new(&json!({}), &[node("a", 0)]);
        assert_eq!(none.pick(None), None);
    }

    #[test]
    fn chash_is_stable_per_key_and_spreads_keys() {
        let nodes = vec![node("a", 1), node("b", 1), node("c", 1)];
        let b = Balancer::new(
            &json!({"type": "chash", "hash_on": "header", "key": "x-user"}),
            &nodes,
        );
        assert_eq!(b.hash_on(), Some(&HashOn::Header("x-user".into())));
        let first = b.pick(Some(b"alice"));
        assert!((0..20).all(|_| b.pick(Some(b"alice")) == first));
        let spread: std::collections::HashSet<_> = (0..200)
            .filter_map(|i| b.pick(Some(format!("user{i}").as_bytes())))
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn huge_weights_are_scaled_not_expanded() {
        let nodes = vec![node("a", 1_000_000), node("b", 3_000_000)];
        let b = Balancer::new(&json!({}), &nodes);
        let Balancer::RoundRobin { schedule, .. } = &b else {
            panic!("expected round robin")
        };
        assert_eq!(schedule.len(), 4);
    }
}
