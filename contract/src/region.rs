//! Edge regions and the country → region map.
//!
//! The map is data (`geo-data/country-regions.json`), compiled into both edge and
//! origin via [`RegionMap::builtin`] and overridable with a JSON document of the same
//! shape ([`RegionMap::from_json`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use thiserror::Error;

/// The map shipped in `geo-data/country-regions.json`.
pub const BUILTIN_REGION_MAP_JSON: &str = include_str!("../../geo-data/country-regions.json");

/// A region name: 1 to 32 of `a-z 0-9 -`. Serde reads it through [`Region::parse`].
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl TryFrom<String> for Region {
    type Error = RegionError;
    fn try_from(s: String) -> Result<Self, RegionError> {
        Self::parse(&s)
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.0
    }
}

impl Region {
    pub fn parse(s: &str) -> Result<Self, RegionError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Region(s.to_owned()))
        } else {
            Err(RegionError::BadRegionName(s.chars().take(40).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegionError {
    #[error("region name {0:?} is not 1 to 32 of a-z 0-9 -")]
    BadRegionName(String),
    #[error("country code {0:?} is not two ASCII capital letters")]
    BadCountry(String),
    #[error("country {country} maps to {region}, which is not in the list of regions")]
    UnknownRegion { country: String, region: String },
    #[error("region map is not valid JSON of the expected shape: {0}")]
    Json(String),
}

#[derive(Deserialize)]
struct RegionMapFile {
    default_region: String,
    regions: Vec<String>,
    countries: BTreeMap<String, String>,
}

/// Country (ISO 3166-1 alpha-2) → region, with a default for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionMap {
    default_region: Region,
    regions: Vec<Region>,
    countries: BTreeMap<String, Region>,
}

impl RegionMap {
    /// Parses and validates a map: every region name is valid, every country is two
    /// capital letters, and every country and the default map to a listed region.
    pub fn from_json(text: &str) -> Result<Self, RegionError> {
        let file: RegionMapFile =
            serde_json::from_str(text).map_err(|e| RegionError::Json(e.to_string()))?;
        let regions = file
            .regions
            .iter()
            .map(|r| Region::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let known = |r: &Region| regions.contains(r);
        let default_region = Region::parse(&file.default_region)?;
        if !known(&default_region) {
            return Err(RegionError::UnknownRegion {
                country: "(default)".into(),
                region: default_region.0,
            });
        }
        let mut countries = BTreeMap::new();
        for (country, region) in file.countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(RegionError::BadCountry(country));
            }
            let region = Region::parse(&region)?;
            if !known(&region) {
                return Err(RegionError::UnknownRegion {
                    country,
                    region: region.0,
                });
            }
            countries.insert(country, region);
        }
        Ok(RegionMap {
            default_region,
            regions,
            countries,
        })
    }

    /// The map from `geo-data/country-regions.json`.
    pub fn builtin() -> Self {
        Self::from_json(BUILTIN_REGION_MAP_JSON)
            .expect("geo-data/country-regions.json is validated by a unit test")
    }

    /// The region for a country code (any case); unknown or missing countries get the default.
    pub fn region_for_country(&self, country: Option<&str>) -> &Region {
        country
            .map(|c| c.trim().to_ascii_uppercase())
            .and_then(|c| self.countries.get(&c))
            .unwrap_or(&self.default_region)
    }

    pub fn default_region(&self) -> &Region {
        &self.default_region
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Whether `region` is one of the listed regions.
    pub fn knows(&self, region: &Region) -> bool {
        self.regions.contains(region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_map_is_valid_and_follows_the_design_seed() {
        let m = RegionMap::from_json(BUILTIN_REGION_MAP_JSON).unwrap();
        assert_eq!(m.region_for_country(Some("US")).as_str(), "us-east");
        assert_eq!(m.region_for_country(Some("CA")).as_str(), "us-east");
        for c in ["GB", "DE", "FR", "ES", "SE"] {
            assert_eq!(m.region_for_country(Some(c)).as_str(), "europe", "{c}");
        }
        for c in ["JP", "KR", "SG", "AU"] {
            assert_eq!(m.region_for_country(Some(c)).as_str(), "asia", "{c}");
        }
    }

    #[test]
    fn unknown_country_routes_to_default_region() {
        let m = RegionMap::builtin();
        assert_eq!(m.region_for_country(Some("BR")).as_str(), "us-east");
        assert_eq!(m.region_for_country(Some("XX")).as_str(), "us-east");
        assert_eq!(m.region_for_country(None).as_str(), "us-east");
        assert_eq!(m.region_for_country(Some("gb")).as_str(), "europe");
    }

    #[test]
    fn maps_naming_unlisted_regions_are_refused() {
        let bad = r#"{"default_region":"x","regions":["x"],"countries":{"GB":"mars"}}"#;
        assert!(matches!(
            RegionMap::from_json(bad),
            Err(RegionError::UnknownRegion { .. })
        ));
        let bad = r#"{"default_region":"x","regions":["x"],"countries":{"gbr":"x"}}"#;
        assert!(matches!(
            RegionMap::from_json(bad),
            Err(RegionError::BadCountry(_))
        ));
    }
}
