//! Scalars with their own syntax: durations, whole numbers, byte sizes and status ranges.
//! Their errors carry the YAML location automatically.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration {s:?} ({e}); expected a number with a unit, e.g. 500ms, 10s, 2m, 1h"
            ))
        })
    }
}

/// `expect.cert_min_days`: a whole number of days (`14`) or a duration (`14d`, `336h`).
#[derive(Debug, Clone, Copy)]
pub(super) struct CertMin(pub(super) Duration);

impl<'de> Deserialize<'de> for CertMin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WANT: &str = "expected a number of days such as 14, or a duration such as 14d";
        impl Visitor<'_> for V {
            type Value = CertMin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CertMin, E> {
                v.checked_mul(86_400)
                    .map(|s| CertMin(Duration::from_secs(s)))
                    .ok_or_else(|| E::custom(format!("invalid cert_min_days {v}; {WANT}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CertMin, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid cert_min_days {v}; {WANT}")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CertMin, E> {
                if let Ok(days) = v.trim().parse::<u64>() {
                    return self.visit_u64(days);
                }
                humantime::parse_duration(v.trim())
                    .map(CertMin)
                    .map_err(|e| E::custom(format!("invalid cert_min_days {v:?} ({e}); {WANT}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for CertMin {
    fn schema_name() -> Cow<'static, str> {
        "CertMinDays".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Days (14) or a duration (14d, 336h)",
            "anyOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^\\s*[0-9]" } ]
        })
    }
}

/// A whole number ≥ 0 (retries, concurrency, …).
#[derive(Debug, Clone, Copy)]
pub(super) struct Count(pub(super) u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number ≥ 0")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map(Count).map_err(|_| {
                    E::custom(format!("invalid value {v}; expected a whole number ≥ 0"))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                v.trim().parse().map(Count).map_err(|_| {
                    E::custom(format!("invalid value {v:?}; expected a whole number ≥ 0"))
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // A whole number beyond u64 arrives as a float: keep it out of range (the
                // field's own check then reports it as written, with the accepted range).
                if v.is_finite() && v.fract() == 0.0 && v >= u64::MAX as f64 {
                    return Ok(Count(u64::MAX));
                }
                Err(E::custom(format!(
                    "invalid value {v}; expected a whole number ≥ 0"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: `65536`, `64KiB`, `1MiB`, `10kB`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size(pub(super) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 65536, 64KiB or 1MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v}; expected e.g. 65536, 64KiB, 1MiB"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {v:?}; expected e.g. 65536, 64KiB, 1MiB"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `expect.status`: a code, a range `"200-299"`, or a list of either.
#[derive(Debug, Clone)]
pub(super) struct StatusSpec(pub(super) Vec<(u16, u16)>);

pub(super) fn parse_status_item(s: &str) -> Option<(u16, u16)> {
    let one = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            (lo <= hi).then_some((lo, hi))
        }
        None => one(s).map(|c| (c, c)),
    }
}

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WANT: &str =
            "expected a status code 100-599, a range like \"200-299\", or a list of them";
        impl<'de> Visitor<'de> for V {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSpec, E> {
                parse_status_item(v)
                    .map(|r| StatusSpec(vec![r]))
                    .ok_or_else(|| E::custom(format!("invalid status {v:?}; {WANT}")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSpec, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<StatusSpec>()? {
                    all.extend(item.0);
                }
                if all.is_empty() {
                    return Err(de::Error::custom(format!("empty status list; {WANT}")));
                }
                Ok(StatusSpec(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "A duration: 500ms, 10s, 2m, 1h", "pattern": "^\\s*[0-9]" })
    }
}

impl JsonSchema for Count {
    fn schema_name() -> Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 0 })
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes: 65536, 64KiB, 1MiB",
            "anyOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|K|KiB|M|MiB|G|GiB|kB|KB|MB|GB)?\\s*$" } ]
        })
    }
}

impl JsonSchema for StatusSpec {
    fn schema_name() -> Cow<'static, str> {
        "StatusSpec".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A status code, a range like \"200-299\", or a list of them",
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^\\s*[1-5][0-9][0-9]\\s*(-\\s*[1-5][0-9][0-9]\\s*)?$" },
                { "type": "array", "minItems": 1, "items": { "anyOf": [
                    { "type": "integer", "minimum": 100, "maximum": 599 },
                    { "type": "string", "pattern": "^\\s*[1-5][0-9][0-9]\\s*(-\\s*[1-5][0-9][0-9]\\s*)?$" }
                ] } }
            ]
        })
    }
}
