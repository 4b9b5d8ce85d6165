//! Strict JSON for closed bodies: a document with a duplicate key in any object is
//! refused, so two readers can never see different values for one field
//! (`serde_json` alone keeps the last one, some parsers the first).
//!
//! [`check_no_duplicate_keys`] walks the text once without building it (only each
//! object's keys are held while it is read); [`from_slice`] checks, then deserializes.
//! Nesting is bounded by `serde_json`'s recursion limit (128), so hostile depth is an
//! error, not a stack overflow.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Refuses `bytes` unless they are one JSON value in which no object repeats a key.
pub fn check_no_duplicate_keys(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates.deserialize(&mut de)?;
    de.end()
}

/// [`check_no_duplicate_keys`], then `serde_json::from_slice`.
pub fn from_slice<T: de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    check_no_duplicate_keys(bytes)?;
    serde_json::from_slice(bytes)
}

/// A value of any shape, checked for duplicate keys as it is read.
#[derive(Clone, Copy)]
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                let shown: String = key.chars().take(40).collect();
                return Err(de::Error::custom(format_args!("duplicate key {shown:?}")));
            }
            seen.insert(key);
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_duplicate_key_at_any_depth_is_refused() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"b":1,"c":2,"b":3}}"#,
            r#"[{"ok":1},{"k":1,"k":1}]"#,
            r#"{"events":[{"user_id":"u","user_id":"v"}]}"#,
        ] {
            let e = check_no_duplicate_keys(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("duplicate key"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_same_key_in_sibling_objects_is_fine() {
        check_no_duplicate_keys(br#"[{"a":1},{"a":2},{"b":{"a":3}}]"#).unwrap();
        check_no_duplicate_keys(br#"{"a":"\u0061","b":[1,2.5,-3,true,null]}"#).unwrap();
    }

    #[test]
    fn escaped_spellings_of_one_key_are_the_same_key() {
        assert!(check_no_duplicate_keys(br#"{"a":1,"\u0061":2}"#).is_err());
    }

    #[test]
    fn trailing_garbage_and_hostile_depth_are_errors_not_crashes() {
        assert!(check_no_duplicate_keys(b"{} x").is_err());
        let deep = "[".repeat(100_000);
        assert!(check_no_duplicate_keys(deep.as_bytes()).is_err());
    }

    #[test]
    fn from_slice_deserializes_what_passes() {
        let v: serde_json::Value = from_slice(br#"{"a":[1,{"b":2}]}"#).unwrap();
        assert_eq!(v["a"][1]["b"], 2);
        assert!(from_slice::<serde_json::Value>(br#"{"a":1,"a":1}"#).is_err());
    }

    proptest! {
        #[test]
        fn any_value_serde_json_writes_passes_and_a_repeated_key_never_does(
            keys in proptest::collection::btree_set("[a-z]{1,4}", 1..6),
            dup in 0usize..6,
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let obj: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (k.clone(), serde_json::json!([k, {"k": 1}]))).collect();
            let text = serde_json::to_string(&obj).unwrap();
            prop_assert!(check_no_duplicate_keys(text.as_bytes()).is_ok());
            let repeated = &keys[dup % keys.len()];
            let with_dup = format!("{},\"{repeated}\":0}}", &text[..text.len() - 1]);
            prop_assert!(check_no_duplicate_keys(with_dup.as_bytes()).is_err());
        }
    }
}
