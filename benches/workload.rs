//! The end-to-end benches' workload: generated EventRouter envelopes (`fanout::generate`), the
//! same sequence for every contender, and how many fall in each namespace.

use std::collections::BTreeMap;

use fanout::generate::EventGenerator;

pub struct Workload {
    /// (key, value, namespace) per event, in production order.
    pub events: Vec<(String, Vec<u8>, String)>,
    pub per_namespace: BTreeMap<String, u64>,
    pub bytes: u64,
}

impl Workload {
    /// `n` events over `namespaces` namespaces, from a fixed seed.
    pub fn generate(n: usize, namespaces: usize) -> Self {
        let mut generator = EventGenerator::new(7, namespaces);
        let mut per_namespace = BTreeMap::new();
        let mut bytes = 0;
        let events = (0..n)
            .map(|_| {
                let e = generator.next_event();
                *per_namespace.entry(e.namespace.clone()).or_insert(0) += 1;
                bytes += e.value.len() as u64;
                (e.key, e.value, e.namespace)
            })
            .collect();
        Self {
            events,
            per_namespace,
            bytes,
        }
    }
}
