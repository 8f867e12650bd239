//! The plain reader: a probe file read straight from the YAML parser's events, for the plain
//! YAML probe files are written in (mappings, lists, strings, decimal counts). The full YAML
//! deserializer costs several times more per route, which a 20 000-route file feels.
//!
//! It gives up ([`read`] returns `None`) at the first thing outside that subset: an anchor, an
//! alias, a tag, a merge key, a duplicate or non-string key, a scalar whose type is not plain
//! to see (`~`, `yes`, `0x10`, `1_000`, `.inf`…), a second document, a limit approached, any
//! error at all. The caller then reads the file again with the full deserializer, whose answer
//! (and every error message) is the reference. What the plain reader does accept, it reads to
//! the very value the full one gives, positions included: the tests compare both on every
//! probe file they have and on generated ones.

use std::borrow::Cow;
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Span, StrInput};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;

use super::MAX_ROUTES;
use super::diagnostics::{MAX_DEPTH, MAX_EVENTS, MAX_NODES, MAX_SCALAR_BYTES, yaml_options};
use super::route_count::{ROUTE_SLOTS, slots_read};

/// The key under which the YAML crate's `Spanned<T>` expects its positions (its private
/// protocol: if it ever changes, `Spanned` fails here and the full reader takes every file,
/// which the tests notice).
const SPANNED_MARKER: &str = "__serde_saphyr_private_spanned";

/// Read YAML text as a `T`: with the plain reader if it can, else with the full deserializer
/// (with the probe file's limits), whose error is the one to report.
pub(super) fn from_str<'a, T: de::Deserialize<'a> + fmt::Debug>(
    text: &'a str,
) -> std::result::Result<T, serde_saphyr::Error> {
    // Route slots count as routes are read: a reading given up must not count twice.
    let slots = slots_read();
    if let Some(value) = read(text) {
        // Up to 256 KiB: the tests' large files repeat one shape thousands of times, and
        // reading them twice over in a debug build only slows the tests that bound CPU time.
        #[cfg(debug_assertions)]
        if text.len() <= 256 * 1024 {
            same_as_full(&value, text, slots);
        }
        return Ok(value);
    }
    ROUTE_SLOTS.with(|c| c.set(slots));
    serde_saphyr::from_str_with_options(text, yaml_options())
}

/// In debug builds (every test), each file the plain reader takes is read by the full
/// deserializer too, and the two must agree to the last position.
#[cfg(debug_assertions)]
fn same_as_full<'a, T: de::Deserialize<'a> + fmt::Debug>(plain: &T, text: &'a str, slots: usize) {
    let after = slots_read();
    ROUTE_SLOTS.with(|c| c.set(slots));
    let full: std::result::Result<T, _> = serde_saphyr::from_str_with_options(text, yaml_options());
    ROUTE_SLOTS.with(|c| c.set(after));
    match full {
        Ok(full) => assert_eq!(
            format!("{plain:?}"),
            format!("{full:?}"),
            "the plain reader and the full deserializer disagree on:\n{text}"
        ),
        Err(e) => panic!("the plain reader took what the full deserializer refuses ({e}):\n{text}"),
    }
}

/// Files from this size on are parsed on a thread of their own while this one reads the
/// events: the parser is two-thirds of the work, and the reading beside it takes about a
/// tenth off a fleet-sized file. Smaller ones are not worth a thread.
const PIPELINED_FROM: usize = 128 * 1024;

/// How near the full reader's event and node limits the plain reader gives up.
const NEAR: usize = 64;

/// Events handed from the parser's thread at a time, and batches in flight: a bounded queue.
const BATCH: usize = 512;
const BATCHES_AHEAD: usize = 4;

/// Read `text` as a `T` if it is plain YAML; `None` to have the full deserializer read it.
pub(super) fn read<'a, T: de::Deserialize<'a>>(text: &'a str) -> Option<T> {
    if text.len() < PIPELINED_FROM {
        return read_from(Events::new(Source::Parser(Box::new(parser(text)))));
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        let spawned = std::thread::Builder::new()
            .name("yaml-parser".into())
            .spawn_scoped(scope, move || produce(parser(text), &tx));
        let source = match spawned {
            Ok(_) => Source::Piped {
                rx,
                batch: Vec::new().into_iter(),
            },
            // No thread to be had (a process limit): the same parse, on this one.
            Err(_) => Source::Parser(Box::new(parser(text))),
        };
        // Returning drops the receiver, which stops the parser's thread at its next batch
        // if this side gave up early; the scope waits for it.
        read_from(Events::new(source))
    })
}

/// The parser as the full reader configures it (`serde_saphyr`'s `parser_options`), so both
/// see the same events with the same positions.
fn parser(text: &str) -> Parser<'_, StrInput<'_>> {
    let budget = serde_saphyr::Budget::default();
    let mut options = granit_parser::Options::default();
    options.simple_key_max_lookahead = budget.simple_key_max_lookahead;
    options.flow_nesting_limit = budget.flow_nesting_limit;
    options.block_nesting_limit = options.block_nesting_limit.max(MAX_DEPTH + 1);
    options.emit_comments = false;
    options.strict_indentation = false;
    options.bom_inside_document_as_content = false;
    Parser::with_options(StrInput::new(text), options)
}

/// The parser's thread: events in batches until the end, an error (the batch simply stops:
/// the reader gives up there), or the reader hanging up.
fn produce<'a>(
    mut parser: Parser<'a, StrInput<'a>>,
    tx: &std::sync::mpsc::SyncSender<Vec<(Event<'a>, At)>>,
) {
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let mut more = true;
        while batch.len() < BATCH {
            match next_event(&mut parser) {
                Some(next) => batch.push(next),
                None => {
                    more = false;
                    break;
                }
            }
        }
        if tx.send(batch).is_err() || !more {
            return;
        }
    }
}

/// The parser's next event and where it starts; `None` at the end or at an error.
fn next_event<'a>(parser: &mut Parser<'a, StrInput<'a>>) -> Option<(Event<'a>, At)> {
    match parser.next_event() {
        Some(Ok((event, span))) => Some((event, At::of(&span))),
        _ => None,
    }
}

fn read_from<'a, T: de::Deserialize<'a>>(mut ev: Events<'a>) -> Option<T> {
    ev.expect(|e| matches!(e, Event::StreamStart)).ok()?;
    ev.expect(|e| matches!(e, Event::DocumentStart(..))).ok()?;
    let value = T::deserialize(De { ev: &mut ev }).ok()?;
    ev.expect(|e| matches!(e, Event::DocumentEnd)).ok()?;
    ev.expect(|e| matches!(e, Event::StreamEnd)).ok()?;
    Some(value)
}

/// Why the plain reader gave up. Never shown: the full reader says what is wrong, if anything.
#[derive(Debug)]
pub(super) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not plain YAML")
    }
}

impl std::error::Error for GiveUp {}

impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

type Result<T> = std::result::Result<T, GiveUp>;

/// Where events come from: the parser itself, or the parser's thread.
enum Source<'a> {
    /// Boxed: the parser is some 3 KB, the queue's end a few words.
    Parser(Box<Parser<'a, StrInput<'a>>>),
    Piped {
        rx: std::sync::mpsc::Receiver<Vec<(Event<'a>, At)>>,
        batch: std::vec::IntoIter<(Event<'a>, At)>,
    },
}

impl<'a> Source<'a> {
    /// The next event and where it starts; `None` at the end or at an error.
    fn next(&mut self) -> Option<(Event<'a>, At)> {
        match self {
            Source::Parser(parser) => next_event(parser),
            Source::Piped { rx, batch } => loop {
                if let Some(next) = batch.next() {
                    return Some(next);
                }
                *batch = rx.recv().ok()?.into_iter();
                if batch.len() == 0 {
                    return None;
                }
            },
        }
    }
}

/// The parser's events, one looked ahead, each vetted: no anchor, alias or tag, and every
/// count well inside the full reader's budget (so that nothing it would refuse is accepted
/// here).
struct Events<'a> {
    source: Source<'a>,
    peeked: Option<(Event<'a>, At)>,
    events: usize,
    nodes: usize,
    scalar_bytes: usize,
    depth: usize,
}

impl<'a> Events<'a> {
    fn new(source: Source<'a>) -> Self {
        Events {
            source,
            peeked: None,
            events: 0,
            nodes: 0,
            scalar_bytes: 0,
            depth: 0,
        }
    }

    /// The next event, read into place (events are large: they are looked at where they lie,
    /// and only a scalar's text is moved out).
    fn peek(&mut self) -> Result<&(Event<'a>, At)> {
        if self.peeked.is_none() {
            self.pull()?;
        }
        self.peeked.as_ref().ok_or(GiveUp)
    }

    /// Past the next event.
    fn skip(&mut self) -> Result<()> {
        self.peek()?;
        self.peeked = None;
        Ok(())
    }

    fn expect(&mut self, want: impl Fn(&Event<'a>) -> bool) -> Result<()> {
        let (event, _) = self.peek()?;
        if !want(event) {
            return Err(GiveUp);
        }
        self.peeked = None;
        Ok(())
    }

    /// The next event into `peeked`, with where it starts (the parser's `Span` is five times
    /// the size: only what `Spanned` needs is kept).
    fn pull(&mut self) -> Result<()> {
        let (event, at) = self.source.next().ok_or(GiveUp)?;
        // The full reader counts events and nodes as here (each event; each scalar and
        // collection): a file near its limits is its to judge.
        self.events += 1;
        if self.events > MAX_EVENTS - NEAR {
            return Err(GiveUp);
        }
        match &event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(..) if self.events <= 2 => {}
            Event::Scalar(value, _, 0, None) => {
                self.nodes += 1;
                self.scalar_bytes += value.len();
            }
            Event::SequenceStart(_, 0, None) | Event::MappingStart(_, 0, None) => {
                self.nodes += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH / 2 {
                    return Err(GiveUp);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
            _ => return Err(GiveUp),
        }
        if self.nodes > MAX_NODES - NEAR || self.scalar_bytes > MAX_SCALAR_BYTES / 2 {
            return Err(GiveUp);
        }
        self.peeked = Some((event, at));
        Ok(())
    }

    /// The next event, which must be a scalar: its text and style.
    fn scalar(&mut self) -> Result<(Cow<'a, str>, ScalarStyle)> {
        self.peek()?;
        let Some((Event::Scalar(value, style, ..), _)) = &mut self.peeked else {
            return Err(GiveUp);
        };
        let scalar = (std::mem::take(value), *style);
        self.peeked = None;
        Ok(scalar)
    }

    /// The next event's scalar, unless it reads as null (`~`, `null`, nothing): a string
    /// target refuses that, an `Option` reads it as `None`; the full reader says which.
    fn text(&mut self) -> Result<Cow<'a, str>> {
        let (value, style) = self.scalar()?;
        if style == ScalarStyle::Plain && null_like(&value) {
            return Err(GiveUp);
        }
        Ok(value)
    }
}

fn null_like(plain: &str) -> bool {
    plain.is_empty() || plain == "~" || plain.eq_ignore_ascii_case("null")
}

/// What an untyped plain scalar is, as far as the plain reader is sure.
enum Plain {
    Count(u64),
    Text,
    Unsure,
}

/// An untyped plain scalar: a decimal count, text that no YAML schema reads as anything
/// else, or unsure (null, booleans of any YAML version, every other number notation).
fn classify(plain: &str) -> Plain {
    let b = plain.as_bytes();
    let decimal = !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit);
    if decimal && (b[0] != b'0' || b.len() == 1) {
        return plain.parse().map_or(Plain::Unsure, Plain::Count);
    }
    let lower = plain.to_ascii_lowercase();
    let special = matches!(
        lower.as_str(),
        "" | "~" | "null" | "y" | "yes" | "n" | "no" | "true" | "false" | "on" | "off"
    ) || lower.contains("inf")
        || lower.contains("nan");
    // A number in any notation: a sign, then a radix prefix (hex, octal, binary), or digits
    // with points, exponents, colons (sexagesimal) and underscores alone. Anything else with
    // another character (`10s`, `2xx`, `64KiB`) is text.
    let unsigned = plain.trim_start_matches(['+', '-']).as_bytes();
    let radix = matches!(
        unsigned,
        [b'0', b'x' | b'X' | b'o' | b'O' | b'b' | b'B', ..]
    );
    let numeric = |c: char| c.is_ascii_digit() || "+-._:eE".contains(c);
    // A sign inside a number follows its exponent's `e`; `200-299` is a range, text.
    let inner_sign = unsigned
        .windows(2)
        .any(|w| matches!(w, [a, b'+' | b'-'] if !matches!(a, b'e' | b'E')));
    if special || radix || (plain.chars().all(numeric) && !inner_sign) {
        Plain::Unsure
    } else {
        Plain::Text
    }
}

fn visit_text<'a, V: Visitor<'a>>(visitor: V, text: Cow<'a, str>) -> Result<V::Value> {
    match text {
        Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
        Cow::Owned(s) => visitor.visit_string(s),
    }
}

struct De<'p, 'a> {
    ev: &'p mut Events<'a>,
}

impl<'a> Deserializer<'a> for De<'_, 'a> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.ev.peek()?.0 {
            Event::Scalar(..) => {
                let (value, style) = self.ev.scalar()?;
                if style != ScalarStyle::Plain {
                    return visit_text(visitor, value);
                }
                match classify(&value) {
                    Plain::Count(n) => visitor.visit_u64(n),
                    Plain::Text => visit_text(visitor, value),
                    Plain::Unsure => Err(GiveUp),
                }
            }
            Event::SequenceStart(..) => self.deserialize_seq(visitor),
            Event::MappingStart(..) => self.deserialize_map(visitor),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        let text = self.ev.text()?;
        visit_text(visitor, text)
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match self.ev.scalar()? {
            (value, ScalarStyle::Plain) if value == "true" => visitor.visit_bool(true),
            (value, ScalarStyle::Plain) if value == "false" => visitor.visit_bool(false),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        match &self.ev.peek()?.0 {
            Event::Scalar(value, ScalarStyle::Plain, ..) if null_like(value) => Err(GiveUp),
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                visitor.visit_some(self)
            }
            _ => Err(GiveUp),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == "__yaml_spanned" {
            let at = self.ev.peek()?.1;
            visitor.visit_newtype_struct(SpannedDe { ev: self.ev, at })
        } else if name.starts_with("__yaml") {
            Err(GiveUp)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.ev.expect(|e| matches!(e, Event::SequenceStart(..)))?;
        let mut seq = Seq {
            ev: self.ev,
            done: false,
        };
        let value = visitor.visit_seq(&mut seq)?;
        if !seq.done {
            seq.ev.expect(|e| matches!(e, Event::SequenceEnd))?;
        }
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.ev.expect(|e| matches!(e, Event::MappingStart(..)))?;
        let mut map = Map {
            ev: self.ev,
            seen: Vec::new(),
            done: false,
        };
        let value = visitor.visit_map(&mut map)?;
        if !map.done {
            map.ev.expect(|e| matches!(e, Event::MappingEnd))?;
        }
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match &self.ev.peek()?.0 {
            Event::Scalar(..) => visitor.visit_enum(UnitVariant { ev: self.ev }),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    // Typed numbers, characters, bytes, units and tuples: the probe file has none outside
    // `deserialize_any`; the full reader takes any file that asks for them.
    fn deserialize_i8<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_i16<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_i32<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_i64<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_u8<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_u16<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_u32<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_u64<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_f32<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_f64<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_char<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_bytes<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_byte_buf<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_unit<V: Visitor<'a>>(self, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_unit_struct<V: Visitor<'a>>(self, _: &'static str, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_tuple<V: Visitor<'a>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value> {
        Err(GiveUp)
    }
}

struct Seq<'p, 'a> {
    ev: &'p mut Events<'a>,
    done: bool,
}

impl<'a> SeqAccess<'a> for &mut Seq<'_, 'a> {
    type Error = GiveUp;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.done {
            return Ok(None);
        }
        // A file past the route limit is an error whatever else it holds, and the full
        // reader counts the routes past it without holding them: it is the one to read on.
        // (Routes are list elements: checked here, not at every event.)
        if slots_read() > MAX_ROUTES {
            return Err(GiveUp);
        }
        if matches!(self.ev.peek()?.0, Event::SequenceEnd) {
            self.ev.skip()?;
            self.done = true;
            return Ok(None);
        }
        seed.deserialize(De { ev: self.ev }).map(Some)
    }
}

struct Map<'p, 'a> {
    ev: &'p mut Events<'a>,
    /// This mapping's keys so far: a duplicate is the full reader's to refuse.
    seen: Vec<Cow<'a, str>>,
    done: bool,
}

impl<'a> MapAccess<'a> for &mut Map<'_, 'a> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.done {
            return Ok(None);
        }
        let key = match &self.ev.peek()?.0 {
            Event::MappingEnd => {
                self.ev.skip()?;
                self.done = true;
                return Ok(None);
            }
            Event::Scalar(key, style, ..) => {
                // Keys the full reader treats specially, or compares as numbers: its call.
                let special = *style == ScalarStyle::Plain
                    && (null_like(key)
                        || key == "<<"
                        || key.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)));
                if special || self.seen.iter().any(|k| k == key) {
                    return Err(GiveUp);
                }
                key.clone()
            }
            _ => return Err(GiveUp),
        };
        self.seen.push(key);
        seed.deserialize(De { ev: self.ev }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(De { ev: self.ev })
    }
}

/// An enum written as its variant's name: a unit variant, or the full reader's to read.
struct UnitVariant<'p, 'a> {
    ev: &'p mut Events<'a>,
}

impl<'a> EnumAccess<'a> for UnitVariant<'_, 'a> {
    type Error = GiveUp;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'a>>(self, seed: V) -> Result<(V::Value, Self)> {
        let variant = seed.deserialize(De { ev: &mut *self.ev })?;
        Ok((variant, self))
    }
}

impl<'a> VariantAccess<'a> for UnitVariant<'_, 'a> {
    type Error = GiveUp;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, _: T) -> Result<T::Value> {
        Err(GiveUp)
    }
    fn tuple_variant<V: Visitor<'a>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
    fn struct_variant<V: Visitor<'a>>(self, _: &'static [&'static str], _: V) -> Result<V::Value> {
        Err(GiveUp)
    }
}

// ---------------------------------------------------------------------------------------------
// Positions, handed to `Spanned<T>` as the YAML crate's own deserializer hands them: a map of
// a marker, the value, and where it was referenced and defined (the same place here, as there
// are no aliases).

/// Where a node starts, as the YAML crate's `Location` records it: 1-based line and column,
/// the span in characters, and in bytes.
#[derive(Clone, Copy)]
struct At {
    line: u32,
    column: u32,
    offset: u64,
    len: u64,
    bytes: (u64, u64),
}

impl At {
    fn of(span: &Span) -> At {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let unknown = u64::from(u32::MAX);
        let bytes = match (span.start.byte_offset(), span.end.byte_offset()) {
            (Some(start), Some(end)) => {
                let len = end.saturating_sub(start);
                match (u32::try_from(start), u32::try_from(len)) {
                    (Ok(s), Ok(l)) => (u64::from(s), u64::from(l)),
                    _ => (unknown, unknown),
                }
            }
            _ => (unknown, unknown),
        };
        At {
            line: clamp(span.start.line()),
            column: clamp(span.start.col() + 1),
            offset: span.start.index() as u64,
            len: span.len() as u64,
            bytes,
        }
    }
}

struct SpannedDe<'p, 'a> {
    ev: &'p mut Events<'a>,
    at: At,
}

impl<'de> Deserializer<'de> for SpannedDe<'_, 'de> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_map(SpannedMap {
            ev: self.ev,
            at: self.at,
            state: 0,
        })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct SpannedMap<'p, 'a> {
    ev: &'p mut Events<'a>,
    at: At,
    state: u8,
}

impl<'a> MapAccess<'a> for SpannedMap<'_, 'a> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let key = match self.state {
            0 => SPANNED_MARKER,
            1 => "value",
            2 => "referenced",
            3 => "defined",
            _ => return Ok(None),
        };
        self.state += 1;
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        match self.state {
            1 => seed.deserialize(true.into_deserializer()),
            2 => seed.deserialize(De { ev: &mut *self.ev }),
            3 | 4 => seed.deserialize(AtDe {
                at: self.at,
                state: 0,
            }),
            _ => Err(GiveUp),
        }
    }
}

/// `At` as a `Location` (`line`, `column`, `span`, `source_id`), then its `span` (`offset`,
/// `len`, `byte_info`).
struct AtDe {
    at: At,
    /// 0: the location's keys; 10: the span's.
    state: u8,
}

impl<'de> Deserializer<'de> for AtDe {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_map(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'a> MapAccess<'a> for AtDe {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let key = match self.state {
            0 => "line",
            1 => "column",
            2 => "span",
            3 => "source_id",
            10 => "offset",
            11 => "len",
            12 => "byte_info",
            _ => return Ok(None),
        };
        self.state += 1;
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        let at = self.at;
        match self.state {
            1 => seed.deserialize(at.line.into_deserializer()),
            2 => seed.deserialize(at.column.into_deserializer()),
            3 => seed.deserialize(AtDe { at, state: 10 }),
            4 => seed.deserialize(0u32.into_deserializer()),
            11 => seed.deserialize(at.offset.into_deserializer()),
            12 => seed.deserialize(at.len.into_deserializer()),
            13 => seed.deserialize(de::value::SeqDeserializer::new(
                [at.bytes.0, at.bytes.1].into_iter(),
            )),
            _ => Err(GiveUp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::dropins::RawDropIn;
    use super::super::raw::RawFile;
    use super::*;

    /// Both readers on `text`: the plain one's value (if it took the file) must be the full
    /// one's, to the last position. Whether the plain reader took it.
    fn agree(text: &str) -> bool {
        ROUTE_SLOTS.with(|c| c.set(0));
        let plain: Option<RawFile> = read(text);
        ROUTE_SLOTS.with(|c| c.set(0));
        let full: std::result::Result<RawFile, _> =
            serde_saphyr::from_str_with_options(text, yaml_options());
        match (&plain, full) {
            (Some(p), Ok(f)) => assert_eq!(format!("{p:?}"), format!("{f:?}"), "for\n{text}"),
            (Some(_), Err(e)) => {
                panic!("the plain reader took what the full one refuses ({e}):\n{text}")
            }
            (None, _) => {}
        }
        plain.is_some()
    }

    fn file(route: &str) -> String {
        format!(
            "targets:\n  - name: api\n    base_url: http://127.0.0.1:8080\n    routes:\n      - {route}\n"
        )
    }

    #[test]
    fn the_shipped_probe_file_is_read_plainly_and_the_same() {
        let text = include_str!("../../probes.yaml");
        assert!(agree(text), "the plain reader gave up on probes.yaml");
    }

    #[test]
    fn plain_files_of_every_shape_are_read_the_same() {
        let plain = [
            "targets: [ { name: a, base_url: 'http://127.0.0.1:1', routes: [ { path: /ok } ] } ]\n",
            "---\ntargets:\n- name: a\n  base_url: http://127.0.0.1:1\n  routes:\n  - path: /ok\n...\n",
            "# head\ntargets: # the list\n  - name: a   # trailing\n    base_url: \"http://127.0.0.1:1\"\n    routes: [ {path: \"/\\u00e9t\\u00e9\", class: auxiliary} ]\n",
            "targets:\r\n  - name: a\r\n    base_url: http://127.0.0.1:1\r\n    routes:\r\n      - path: /crlf\r\n",
            "\u{feff}targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /bom } ]\n",
            "user_agent: 'it''s me/1.0'\ndefaults: { timeout: 10s, connect_timeout: 1.5s, retries: 2, backoff: 500ms, max_body: 64KiB, concurrency: 8, proxy: false }\nmax_in_flight: 64\ntargets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    unit: a.service\n    headers: { Authorization: Bearer x, X-Trace: 'on' }\n    recovery: { after_failed_runs: 3, on: [timeout, reset], cooldown: 30m }\n    routes:\n      - path: /json\n        method: POST\n        body: |\n          {\"jsonrpc\": \"2.0\",\n           \"id\": 1}\n        expect: { status: [200, 204], body_contains: ok, json: { status: up, depth: { n: 3 } } }\n      - path: /folded\n        body: >\n          folded\n          text\n        expect: { status: 200-299, max_latency: 2s }\n",
            "targets:\n  - name: multi\n    base_url: http://127.0.0.1:1\n    routes:\n      - path: /a plain\n          scalar over lines\n",
            "targets:\n  - name: \"\u{4e16}\u{754c}\"\n    tcp: 127.0.0.1:22\n",
        ];
        for text in plain {
            assert!(agree(text), "the plain reader gave up on\n{text}");
        }
    }

    #[test]
    fn anything_unplain_is_left_to_the_full_reader() {
        let unplain = [
            // Anchors, aliases, merge keys, tags.
            "x: &h { path: /a }\ntargets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ *h ]\n",
            "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { <<: { path: /a } } ]\n",
            &file("{ path: !!str /a }"),
            // Null-like, boolean-like and other numbers where a type is inferred.
            &file("{ path: /a, retries: ~ }"),
            &file("{ path: /a, retries: 0x10 }"),
            &file("{ path: /a, retries: 1_000 }"),
            &file("{ path: /a, retries: 007 }"),
            &file("{ path: /a, timeout: 1e3 }"),
            &file("{ path: /a, expect: { json: { up: yes } } }"),
            &file("{ path: /a, expect: { json: { n: .inf } } }"),
            &file("{ path: null }"),
            // Duplicate and numeric keys; errors; a second document.
            &file("{ path: /a, path: /b }"),
            "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    headers: { 1: x }\n    routes: [ { path: /a } ]\n",
            &file("{ path: /a, colour: red }"),
            &file("{ path: [ /a ] }"),
            "targets: []\n---\ntargets: []\n",
        ];
        for text in unplain {
            assert!(!agree(text), "the plain reader took\n{text}");
        }
    }

    #[test]
    fn a_drop_in_is_read_the_same_way() {
        let text = "targets:\n  - name: extra\n    base_url: http://127.0.0.1:2\n    routes: [ { path: /x, class: core } ]\n";
        ROUTE_SLOTS.with(|c| c.set(0));
        let plain: RawDropIn = read(text).expect("a plain drop-in is read plainly");
        ROUTE_SLOTS.with(|c| c.set(0));
        let full: RawDropIn = serde_saphyr::from_str_with_options(text, yaml_options()).unwrap();
        assert_eq!(format!("{plain:?}"), format!("{full:?}"));
    }

    #[test]
    fn a_reading_given_up_counts_its_routes_once() {
        // Two routes read plainly, then an alias: the full reader counts them again from zero.
        let text = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /a }, { path: /b } ]\n  - name: b\n    base_url: http://127.0.0.1:1\n    routes: [ &r { path: /c }, *r ]\n";
        ROUTE_SLOTS.with(|c| c.set(5));
        let raw: RawFile = from_str(text).unwrap();
        // The count goes on from the files read before (drop-ins add to it): 5, and 4 here.
        assert_eq!(raw.targets.value.slots, 5 + 4);
        assert_eq!(slots_read(), 5 + 4);
    }

    /// Scalars a probe file might hold, the awkward ones above all.
    const SCALARS: &[&str] = &[
        "/ok",
        "/a b",
        "core",
        "auxiliary",
        "GET",
        "post",
        "10s",
        "1.5s",
        "500ms",
        "2m",
        "64KiB",
        "1MiB",
        "0",
        "1",
        "2",
        "3",
        "10",
        "204",
        "007",
        "0x1F",
        "0o17",
        "0b1",
        "1_000",
        "+5",
        "-1",
        "1e3",
        "1e-3",
        "1E+3",
        "200-299",
        "1-2",
        "-1-2",
        "1.0",
        ".5",
        ".inf",
        "-.inf",
        ".nan",
        "NaN",
        "inf",
        "~",
        "null",
        "Null",
        "NULL",
        "true",
        "True",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "2xx",
        "[200, 204]",
        "[]",
        "{}",
        "'quoted'",
        "\"dq\\tx\"",
        "''",
        "\"\"",
        "'~'",
        "'null'",
        "'10'",
        "1:30",
        "12:30:00",
        "2001-12-14",
        "x#y",
        "\"\\u00e9\"",
        "&a 1",
        "*a",
        "!!str 2",
        "!!int '3'",
        "\u{e9}t\u{e9}",
        "a: b",
    ];

    /// A route's keys, the values each takes, then awkward spellings (some refused).
    const ROUTE_KEYS: &[(&str, &[&str], &[&str])] = &[
        (
            "class",
            &["core", "auxiliary"],
            &["'core'", "Core", "\"auxiliary\"", "~", "1"],
        ),
        (
            "timeout",
            &["10s", "1.5s", "500ms"],
            &["10", "'2s'", "~", "0x10", "1e3", "2 s"],
        ),
        (
            "retries",
            &["0", "1", "3"],
            &["007", "0x2", "1_0", "+1", "-1", "'2'", "2.0", "~"],
        ),
        (
            "max_body",
            &["64KiB", "1MiB", "1024"],
            &["'10'", "1e3", "~", "1_024"],
        ),
        ("follow_redirects", &["0", "2"], &["'3'", "yes", "0b1"]),
        ("method", &["GET", "POST"], &["'HEAD'", "~", "1", "\"PUT\""]),
    ];

    /// Probe files made at random from the pieces above, in flow or block style: the plain
    /// reader must read each exactly as the full one does, or leave it alone; and it must
    /// take a fair share of them (or it would be tested on nothing).
    #[test]
    fn generated_files_are_read_the_same_or_left_alone() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let pick = |rng: &mut fastrand::Rng, from: &[&'static str]| from[rng.usize(..from.len())];
        // Mostly the first choice, an awkward one at times.
        let mostly = |rng: &mut fastrand::Rng, good: &[&'static str], odd: &[&'static str]| {
            if rng.u8(..5) == 0 {
                pick(rng, odd)
            } else {
                pick(rng, good)
            }
        };
        let (mut taken, cases) = (0, 3000);
        for _ in 0..cases {
            let mut fields = vec![format!(
                "path: {}",
                pick(&mut rng, &["/p", "/a b", "'/q'", "\"/r\""])
            )];
            for (key, good, odd) in ROUTE_KEYS {
                if rng.u8(..3) == 0 {
                    fields.push(format!("{key}: {}", mostly(&mut rng, good, odd)));
                }
            }
            if rng.u8(..8) == 0 {
                fields.push(format!("body: {}", pick(&mut rng, SCALARS)));
            }
            let json = pick(&mut rng, SCALARS);
            let status = mostly(
                &mut rng,
                &["200", "[200, 204]", "200-299"],
                &["'204'", "2xx", "~"],
            );
            fields.push(format!(
                "expect: {{ status: {status}, json: {{ v: {json} }} }}"
            ));
            let route = if rng.bool() {
                format!("{{ {} }}", fields.join(", "))
            } else {
                fields.join("\n        ")
            };
            let hkey = mostly(&mut rng, &["X-A", "'X-B'", "on"], &["1", "~", "<<"]);
            let hvalue = pick(&mut rng, SCALARS);
            let text = format!(
                "targets:\n  - name: {}\n    base_url: http://127.0.0.1:8080\n    headers:\n      {hkey}: {hvalue}\n    routes:\n      - {route}\n",
                mostly(&mut rng, &["api", "'api'"], &["yes", "1"])
            );
            if agree(&text) {
                taken += 1;
            }
        }
        assert!(
            taken > cases / 6,
            "the plain reader took only {taken} of {cases} files"
        );
    }

    /// The shipped probe file, damaged at random (bytes dropped, doubled, swapped for YAML's
    /// punctuation, quotes, tabs, line breaks, non-ASCII): whatever the plain reader takes
    /// from the wreck, the full one reads the same.
    #[test]
    fn a_damaged_probe_file_is_read_the_same_or_left_alone() {
        let original = include_str!("../../probes.yaml").as_bytes();
        let bits: &[&[u8]] = &[
            b":",
            b"-",
            b"- ",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b"#",
            b"'",
            b"\"",
            b"\t",
            b"\n",
            b"  ",
            b"&a ",
            b"*a",
            b"!!str ",
            b"? ",
            b"|",
            b">",
            b"~",
            b"0x1",
            b"\xc3\xa9",
            b"\r\n",
            b"---\n",
            b"...\n",
            b"<<: ",
        ];
        let mut rng = fastrand::Rng::with_seed(0xda4a9e);
        let (mut taken, cases) = (0, 2000);
        for _ in 0..cases {
            let mut text = original.to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..text.len());
                match rng.u8(..3) {
                    0 => {
                        let n = rng.usize(1..8).min(text.len() - at);
                        text.drain(at..at + n);
                    }
                    1 => {
                        let bit = bits[rng.usize(..bits.len())];
                        text.splice(at..at, bit.iter().copied());
                    }
                    _ => {
                        let n = rng.usize(1..12).min(text.len() - at);
                        let copy = text[at..at + n].to_vec();
                        text.splice(at..at, copy);
                    }
                }
            }
            // A cut in the middle of a character is the loader's to refuse, before YAML.
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            if agree(&text) {
                taken += 1;
            }
        }
        // Most damage lands in comments and values: the plain reader still has work to do.
        assert!(
            taken > cases / 10,
            "the plain reader took only {taken} of {cases} files"
        );
    }

    /// A file of fleet size, `routes` routes of assorted shapes.
    fn large(routes: usize) -> String {
        let mut text = String::from("defaults: { timeout: 10s, retries: 2 }\ntargets:\n");
        for t in 0..routes / 100 {
            text.push_str(&format!(
                "  - name: t{t}\n    base_url: http://127.0.0.1:{}\n    headers: {{ X-T: '{t}' }}\n    routes:\n",
                1000 + t
            ));
            for r in 0..100 {
                text.push_str(&match r % 4 {
                    0 => format!("      - {{ path: /r{r}, class: core }}\n"),
                    1 => format!("      - path: \"/r{r}\"\n        class: auxiliary\n"),
                    2 => format!("      - {{ path: /r{r}, expect: {{ status: [200, 204], json: {{ n: {r} }} }} }}\n"),
                    _ => format!("      - path: /r{r}\n        method: POST\n        body: |\n          {{\"id\": {r}}}\n"),
                });
            }
        }
        text
    }

    #[test]
    fn a_large_file_is_parsed_on_a_second_thread_and_read_the_same() {
        let text = large(4_000);
        assert!(text.len() > PIPELINED_FROM, "{} bytes", text.len());
        assert!(agree(&text), "the plain reader gave up on the large file");
        // The same events on one thread, read the same way.
        ROUTE_SLOTS.with(|c| c.set(0));
        let direct: RawFile =
            read_from(Events::new(Source::Parser(Box::new(parser(&text))))).unwrap();
        ROUTE_SLOTS.with(|c| c.set(0));
        let piped: RawFile = read(&text).unwrap();
        assert_eq!(format!("{direct:?}"), format!("{piped:?}"));
    }

    #[test]
    fn a_large_file_given_up_early_or_late_stops_the_parsers_thread() {
        let text = large(4_000);
        // An alias in the first lines: given up at once, the parser's thread is stopped
        // (`read` returns only once it has ended), and the full reader has the last word.
        let early = text.replacen("targets:\n", "x: &a 1\ntargets:\n", 1);
        assert!(read::<RawFile>(&early).is_none());
        // A YAML error in the last line: the parser's thread ends at the error.
        let late = format!("{text}  - name: [\n");
        assert!(read::<RawFile>(&late).is_none());
        // An unknown key at the end, found by the reader after the parser has finished.
        let unknown = format!("{text}colour: red\n");
        assert!(read::<RawFile>(&unknown).is_none());
        assert!(serde_saphyr::from_str_with_options::<RawFile>(&unknown, yaml_options()).is_err());
    }

    /// A file at the route limit with six keys a route has some 260 000 nodes, past half
    /// the full reader's limit of 500 000: still read plainly (and the same, as a smaller
    /// one of the same shape shows).
    #[test]
    fn a_file_of_many_nodes_under_the_limit_is_read_plainly() {
        let route = |r: usize| {
            format!(
                "      - {{ path: /r{r}, class: core, method: GET, retries: 1, timeout: 2s, max_body: 1KiB }}\n"
            )
        };
        let file = |n: usize| {
            let mut text = String::from(
                "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes:\n",
            );
            (0..n).for_each(|r| text.push_str(&route(r)));
            text
        };
        assert!(agree(&file(50)));
        ROUTE_SLOTS.with(|c| c.set(0));
        let raw: RawFile = read(&file(super::super::MAX_ROUTES)).expect("read plainly");
        assert_eq!(raw.targets.value.slots, super::super::MAX_ROUTES);
    }

    /// Past the route limit (here with the routes of files read before), the full reader
    /// reads on: the file is an error anyway, and reading it twice would double its cost.
    #[test]
    fn a_file_past_the_route_limit_is_left_to_the_full_reader() {
        let text = "targets:\n  - name: a\n    base_url: http://127.0.0.1:1\n    routes: [ { path: /a }, { path: /b } ]\n";
        ROUTE_SLOTS.with(|c| c.set(super::super::MAX_ROUTES - 1));
        assert!(read::<RawFile>(text).is_none());
        ROUTE_SLOTS.with(|c| c.set(super::super::MAX_ROUTES - 1));
        let raw: RawFile = from_str(text).unwrap();
        assert_eq!(raw.targets.value.slots, super::super::MAX_ROUTES + 1);
        // One route short of the limit, the plain reader takes it.
        ROUTE_SLOTS.with(|c| c.set(super::super::MAX_ROUTES - 2));
        assert!(read::<RawFile>(text).is_some());
    }
}
