//! Route counting while the file is read. A route as read is a large struct, so a file with
//! far more than `MAX_ROUTES` routes must not be held whole before its count is checked: the
//! lists below keep the first `MAX_ROUTES` route slots of the file and only count the rest,
//! and `resolve` reports the total.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

use super::MAX_ROUTES;
use super::raw::{RawRoute, RawTarget};

/// Visitor methods that accept every scalar (other than a string) as `$value`.
macro_rules! any_scalar {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

thread_local! {
    /// Route slots read so far by the file being parsed on this thread: a route, or a target
    /// without routes (a `tcp` probe). Reset by `parse_in`.
    pub(super) static ROUTE_SLOTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(super) fn slots_read() -> usize {
    ROUTE_SLOTS.with(std::cell::Cell::get)
}

pub(super) fn add_slots(n: usize) {
    ROUTE_SLOTS.with(|c| c.set(c.get().saturating_add(n)));
}

/// `targets:` as read: the targets while the file is within `MAX_ROUTES`, and the file's
/// total of route slots (what `MAX_ROUTES` limits).
#[derive(Debug, Default)]
pub(super) struct RawTargets {
    pub(super) kept: Vec<Spanned<RawTarget>>,
    pub(super) slots: usize,
}

impl<'de> Deserialize<'de> for RawTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTargets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of targets")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawTargets, A::Error> {
                let mut kept = Vec::new();
                loop {
                    let routes = if slots_read() < MAX_ROUTES {
                        match seq.next_element::<Spanned<RawTarget>>()? {
                            Some(t) => {
                                let n = t.value.routes.count;
                                kept.push(t);
                                n
                            }
                            None => break,
                        }
                    } else {
                        match seq.next_element::<RouteCount>()? {
                            Some(c) => c.0,
                            None => break,
                        }
                    };
                    // A target without routes is one probe (`tcp`), or an error found later.
                    if routes == 0 {
                        add_slots(1);
                    }
                }
                Ok(RawTargets {
                    kept,
                    slots: slots_read(),
                })
            }
        }
        d.deserialize_seq(V)
    }
}

/// A target's `routes:` as read: the routes while the file is within `MAX_ROUTES`, and how
/// many were written.
#[derive(Debug, Default)]
pub(super) struct RawRoutes {
    pub(super) kept: Vec<RawRoute>,
    pub(super) count: usize,
}

impl<'de> Deserialize<'de> for RawRoutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRoutes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of routes")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawRoutes, A::Error> {
                let mut out = RawRoutes::default();
                loop {
                    if slots_read() < MAX_ROUTES {
                        match seq.next_element::<RawRoute>()? {
                            Some(r) => out.kept.push(r),
                            None => break,
                        }
                    } else if seq.next_element::<de::IgnoredAny>()?.is_none() {
                        break;
                    }
                    out.count += 1;
                    add_slots(1);
                }
                // A route as read is large: no room for more than were written.
                out.kept.shrink_to_fit();
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A target past the route limit: only its routes are counted, everything else is skipped.
pub(super) struct RouteCount(usize);

impl<'de> Deserialize<'de> for RouteCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RouteCount, A::Error> {
                let mut n = 0;
                while let Some(key) = map.next_key::<KeyName>()? {
                    if key.0 {
                        n += map.next_value::<RawRoutes>()?.count;
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(RouteCount(n))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RouteCount, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(RouteCount(0))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RouteCount, E> {
                Ok(RouteCount(0))
            }
            any_scalar!(RouteCount(0));
        }
        d.deserialize_any(V)
    }
}

/// A mapping key of a skipped target: whether it is `routes`.
pub(super) struct KeyName(bool);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v == "routes"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyName, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(KeyName(false))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<KeyName, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(KeyName(false))
            }
            any_scalar!(KeyName(false));
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;

    #[test]
    fn a_route_as_read_stays_small() {
        // A file of `MAX_ROUTES` routes holds them all at once while it is read: the keys
        // most routes leave out are boxed (unboxed, a route as read took 768 bytes).
        let size = std::mem::size_of::<RawRoute>();
        assert!(size <= 240, "a route as read takes {size} bytes");
    }

    #[test]
    fn a_file_over_the_route_limit_is_counted_whole_but_kept_only_to_the_limit() {
        let mut yaml = String::from("targets:\n");
        for t in 0..3 {
            yaml.push_str(&format!(
                "  - name: t{t}\n    base_url: http://x\n    routes:\n"
            ));
            for _ in 0..9_000 {
                yaml.push_str("      - {path: /a}\n");
            }
        }
        yaml.push_str("  - {name: tcp, tcp: \"h:1\"}\n  - {name: bad, junk: [1, 2]}\n");
        assert_err(
            &yaml,
            "p.yaml:2:3: 27002 routes; at most 20000 are allowed in one file",
        );
        ROUTE_SLOTS.with(|c| assert_eq!(c.get(), 27_002));
    }
}
