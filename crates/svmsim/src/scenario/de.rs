//! The value grammars of a scenario file, as serde deserializers.
//!
//! [`super::parse`] derives `Deserialize` for every operation and names each
//! field's grammar with `deserialize_with` pointing here: a size, a
//! duration, an address expression, a GPU, a location, flags, attribute
//! lists and expected results. An error raised here carries no position;
//! the TOML deserializer stamps it with the span of the value being read,
//! and `doc.rs` turns that span into file, line, column and field path.
//!
//! Names (GPU names, mapping labels) are resolved while the value is read,
//! so a bad reference is placed at its value. serde's derive cannot pass a
//! context down to a field, so the names in force for the operation being
//! read sit in a thread-local for the length of [`scoped`], which the
//! parser calls around each operation and nowhere else.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use svm_core::Errno;
use svm_core::attr::SvmFlags;
use svm_core::topology::GpuDesc;
use svm_core::uapi::{SVM_LOCATION_SYSMEM, SVM_LOCATION_UNDEFINED, SvmAttribute, attr_type};
use svm_sim::mm::Prot;

use super::parse::{AddrExpr, AttrExpect, CounterExpect, Expect, Fill, SmiExpect, SmiValue};

/// The names an operation's values may refer to.
#[derive(Clone, Debug, Default)]
pub(super) struct Names {
    /// The system's GPUs.
    pub gpus: Vec<GpuDesc>,
    /// The processes, in spawn order.
    pub processes: Vec<String>,
    /// For each process, the mapping labels it has made so far.
    pub labels: Vec<std::collections::BTreeSet<String>>,
    /// The process the operation being read runs in.
    pub current: usize,
}

thread_local! {
    static NAMES: RefCell<Option<Names>> = const { RefCell::new(None) };
}

/// Runs `f` (which deserializes one operation) with `names` in scope, and
/// hands them back afterwards, even if `f` fails.
pub(super) fn scoped<R>(names: &mut Names, f: impl FnOnce() -> R) -> R {
    struct Back<'a>(&'a mut Names);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            if let Some(n) = NAMES.with(|s| s.borrow_mut().take()) {
                *self.0 = n;
            }
        }
    }
    NAMES.with(|s| *s.borrow_mut() = Some(std::mem::take(names)));
    let _back = Back(names);
    f()
}

/// Looks something up in the names in scope; outside [`scoped`] no name
/// resolves.
fn in_scope<R>(f: impl FnOnce(&Names) -> Result<R, String>) -> Result<R, String> {
    NAMES.with(|s| match s.borrow().as_ref() {
        Some(n) => f(n),
        None => Err("names resolve only while a scenario is parsed".to_owned()),
    })
}

/// A list of at most `N` items, refused at item `N + 1` while it is read
/// (not after all of them are held).
pub(super) fn at_most<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct V<T, const N: usize>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N}")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element()? {
                if out.len() == N {
                    return Err(A::Error::custom(format!(
                        "the list has more than {N} entries (it starts here); at most {N} \
                         are allowed"
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T, N>(std::marker::PhantomData))
}

/// A value that is an integer, a string or a boolean.
enum Scalar {
    Int(i128),
    Str(String),
    Bool(bool),
}

/// Reads a [`Scalar`] and hands it to `f`, which says what it means or why
/// not; `expecting` is what a value of another shape is told. `f` runs
/// inside the value's own deserializer, so its error gets the value's span
/// (an element's, inside an array).
fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    f: impl FnOnce(Scalar) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<F>(&'static str, F);
    impl<F> V<F> {
        fn take<T, E: de::Error>(self, s: Scalar) -> Result<T, E>
        where
            F: FnOnce(Scalar) -> Result<T, String>,
        {
            (self.1)(s).map_err(E::custom)
        }
    }
    impl<T, F: FnOnce(Scalar) -> Result<T, String>> Visitor<'_> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.take(Scalar::Int(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.take(Scalar::Int(v.into()))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
            self.take(Scalar::Int(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            self.take(Scalar::Str(v.to_owned()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
            self.take(Scalar::Bool(v))
        }
    }
    d.deserialize_any(V(expecting, f))
}

fn int<T: TryFrom<i128>>(i: i128) -> Result<T, String> {
    T::try_from(i).map_err(|_| format!("{i} is out of range here"))
}

const SIZE_HELP: &str = "expected a size: bytes as an integer, or a string such as \"16KiB\", \"2 MiB\", \"3 pages\", \"0x4000\"";

fn size_of(s: Scalar) -> Result<u64, String> {
    match s {
        Scalar::Int(i) => u64::try_from(i).map_err(|_| "a size cannot be negative".to_owned()),
        Scalar::Str(s) => {
            svm_core::units::parse_size(&s).map_err(|e| format!("expected a size: {e}"))
        }
        Scalar::Bool(_) => Err(SIZE_HELP.to_owned()),
    }
}

/// A byte size in the one size grammar (`4096`, `"16KiB"`, `"3 pages"`;
/// `svm_core::units`).
pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    scalar(d, SIZE_HELP, size_of)
}

/// An optional [`size`].
pub(super) fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

/// A duration: integer nanoseconds, or `"3ms"`, `"100us"`, `"2s"`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    scalar(d, "expected a duration such as \"3ms\"", |s| match s {
        Scalar::Int(i) => u64::try_from(i).map_err(|_| "a duration cannot be negative".to_owned()),
        Scalar::Str(s) => {
            svm_core::units::parse_duration_ns(&s).map_err(|e| format!("expected a duration: {e}"))
        }
        Scalar::Bool(_) => Err("expected a duration such as \"3ms\"".to_owned()),
    })
}

/// A name later operations refer to: letters, digits and `_`.
pub(super) fn opt_label<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    label(d).map(Some)
}

/// See [`opt_label`].
pub(super) fn label<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(d, "a label (letters, digits and '_')", |s| match s {
        Scalar::Str(s)
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(s)
        }
        Scalar::Str(s) => Err(format!("{s:?}: a label is letters, digits and '_'")),
        _ => Err("a label is a string of letters, digits and '_'".to_owned()),
    })
}

/// Protection as `mmap` and `mprotect` take it: `"rw"`, `"r"`, `"none"`.
pub(super) fn prot<'de, D: Deserializer<'de>>(d: D) -> Result<Prot, D::Error> {
    const HELP: &str = "expected protection such as \"rw\", \"r\", \"rwx\", \"none\"";
    scalar(d, HELP, |s| match s {
        Scalar::Str(s) => Prot::parse(&s).ok_or_else(|| format!("{s:?}: {HELP}")),
        _ => Err(HELP.to_owned()),
    })
}

/// The default protection, read-write.
pub(super) fn rw() -> Prot {
    Prot::RW
}

fn gpu_named(n: &Names, name: &str) -> Result<u32, String> {
    n.gpus
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.id.raw())
        .ok_or_else(|| {
            let names: Vec<_> = n.gpus.iter().map(|g| g.name.as_str()).collect();
            format!(
                "no GPU named {name:?}; the system has: {}",
                names.join(", ")
            )
        })
}

fn gpu_of(s: Scalar) -> Result<u32, String> {
    match s {
        Scalar::Int(i) => int(i),
        Scalar::Str(name) => in_scope(|n| gpu_named(n, &name)),
        Scalar::Bool(_) => Err("expected a GPU: its name, or a raw gpu_id".to_owned()),
    }
}

/// A GPU: its name, or a raw gpu_id (which may be unknown on purpose).
pub(super) fn gpu<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    scalar(d, "a GPU: its name, or a raw gpu_id", gpu_of)
}

/// An optional [`gpu`].
pub(super) fn opt_gpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    gpu(d).map(Some)
}

fn location_of(s: Scalar) -> Result<u32, String> {
    match s {
        Scalar::Str(s) if s == "sysmem" => Ok(SVM_LOCATION_SYSMEM),
        Scalar::Str(s) if s == "undefined" => Ok(SVM_LOCATION_UNDEFINED),
        s => gpu_of(s),
    }
}

/// A location: `"sysmem"`, `"undefined"`, a GPU name, or a raw integer.
pub(super) fn location<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    scalar(
        d,
        "a location: \"sysmem\", \"undefined\", a GPU name or a raw value",
        location_of,
    )
}

const ADDR_HELP: &str =
    "expected an address: an integer, or a string such as \"buf\", \"buf+8KiB\", \"0x10000\"";

fn addr_of(s: Scalar) -> Result<AddrExpr, String> {
    let s = match s {
        Scalar::Int(i) => {
            return Ok(AddrExpr {
                label: None,
                offset: i,
            });
        }
        Scalar::Str(s) => s,
        Scalar::Bool(_) => return Err(ADDR_HELP.to_owned()),
    };
    // `head(+|-)term(+|-)term...`: a label or number, then size terms.
    let cut = s.find(['+', '-']).unwrap_or(s.len());
    let head = s[..cut].trim();
    let mut offset: i128 = 0;
    let mut rest = &s[cut..];
    while let Some(sign) = rest.chars().next() {
        let body = &rest[1..];
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let term = &body[..end];
        let n = svm_core::units::parse_size(term)
            .map_err(|_| format!("{term:?} in {s:?}: {SIZE_HELP}"))?;
        offset += if sign == '+' {
            i128::from(n)
        } else {
            -i128::from(n)
        };
        rest = &body[end..];
    }
    if head.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(n) = svm_core::units::parse_size(head)
    {
        return Ok(AddrExpr {
            label: None,
            offset: i128::from(n) + offset,
        });
    }
    in_scope(|n| {
        if n.labels[n.current].contains(head) {
            Ok(())
        } else {
            Err(format!(
                "no mapping labelled {head:?} in process {:?} before this op",
                n.processes[n.current]
            ))
        }
    })?;
    Ok(AddrExpr {
        label: Some(head.to_owned()),
        offset,
    })
}

/// An address: a number, or a mapping's label plus or minus sizes
/// (`"buf+8KiB"`, `"buf+1 page-16"`).
pub(super) fn addr<'de, D: Deserializer<'de>>(d: D) -> Result<AddrExpr, D::Error> {
    scalar(d, ADDR_HELP, addr_of)
}

/// An optional [`addr`].
pub(super) fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AddrExpr>, D::Error> {
    addr(d).map(Some)
}

fn flag_named(name: &str) -> Result<u32, String> {
    SvmFlags::from_name(name)
        .map(SvmFlags::bits)
        .ok_or_else(|| {
            let known: Vec<_> = SvmFlags::NAMES.iter().map(|(_, n)| *n).collect();
            format!("unknown flag {name:?}; known flags: {}", known.join(", "))
        })
}

/// SVM flags: a raw integer, `"HOST_ACCESS|COHERENT"`, or a list of names.
struct FlagsSeed;

impl<'de> DeserializeSeed<'de> for FlagsSeed {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = u32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("flags: a raw integer, \"A|B\", or a list of flag names")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
                int(v.into()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                v.split('|')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .try_fold(0, |acc, n| Ok::<u32, String>(acc | flag_named(n)?))
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u32, A::Error> {
                let mut bits = 0;
                while let Some(b) = seq.next_element_seed(OneFlag)? {
                    bits |= b;
                }
                Ok(bits)
            }
        }
        struct OneFlag;
        impl<'de> DeserializeSeed<'de> for OneFlag {
            type Value = u32;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
                scalar(d, "a flag name", |s| match s {
                    Scalar::Str(n) => flag_named(&n),
                    _ => Err("a flag name is a string".to_owned()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

const ATTR_NAMES: [(&str, u32); 8] = [
    ("preferred_loc", attr_type::PREFERRED_LOC),
    ("prefetch_loc", attr_type::PREFETCH_LOC),
    ("access", attr_type::ACCESS),
    ("access_in_place", attr_type::ACCESS_IN_PLACE),
    ("no_access", attr_type::NO_ACCESS),
    ("set_flags", attr_type::SET_FLAGS),
    ("clr_flags", attr_type::CLR_FLAGS),
    ("granularity", attr_type::GRANULARITY),
];

fn attr_type_of(name: &str) -> Result<u32, String> {
    ATTR_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<_> = ATTR_NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown attribute {name:?}; expected one of: {}, or {{ type = N, value = N }}",
                names.join(", ")
            )
        })
}

/// The value of attribute `name`, in that attribute's grammar. An unknown
/// name is refused here, so the error sits at the value.
struct AttrValue<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for AttrValue<'_> {
    type Value = SvmAttribute;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SvmAttribute, D::Error> {
        let ty = attr_type_of(self.0).map_err(D::Error::custom)?;
        let value = match ty {
            attr_type::PREFERRED_LOC | attr_type::PREFETCH_LOC => location(d)?,
            attr_type::ACCESS | attr_type::ACCESS_IN_PLACE | attr_type::NO_ACCESS => gpu(d)?,
            attr_type::SET_FLAGS | attr_type::CLR_FLAGS => FlagsSeed.deserialize(d)?,
            _ => uint(d)?,
        };
        Ok(SvmAttribute::new(ty, value))
    }
}

/// A raw integer field of `{ type = N, value = N }`.
fn raw_u32<'de, A: MapAccess<'de>>(map: &mut A) -> Result<u32, A::Error> {
    map.next_value_seed(U32Seed)
}

/// One attribute: `{ name = value }` or `{ type = N, value = N }`; with
/// `query`, also a bare name (`"granularity"`) as GET_ATTR asks.
struct AttrItem {
    query: bool,
}

impl<'de> DeserializeSeed<'de> for AttrItem {
    type Value = SvmAttribute;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SvmAttribute, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttrItem {
    type Value = SvmAttribute;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute: a table with one key, such as { access = \"gpu0\" }")?;
        if self.query {
            f.write_str(", or an attribute name")?;
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<SvmAttribute, E> {
        if !self.query {
            return Err(E::invalid_type(de::Unexpected::Str(name), &self));
        }
        let ty = attr_type_of(name).map_err(E::custom)?;
        if ty == attr_type::ACCESS {
            return Err(E::custom(
                "an access query names its GPU: { access = \"gpu0\" }",
            ));
        }
        Ok(SvmAttribute::new(ty, 0))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SvmAttribute, A::Error> {
        const ONE: &str = "an attribute is a table with one key, such as { access = \"gpu0\" }";
        let Some(key) = map.next_key::<String>()? else {
            return Err(A::Error::custom(ONE));
        };
        if key == "type" || key == "value" {
            // `{ type = N, value = N }`: a raw attribute, as a test of the edge.
            let mut raw = BTreeMap::new();
            raw.insert(key, raw_u32(&mut map)?);
            while let Some(k) = map.next_key::<String>()? {
                if k != "type" && k != "value" {
                    return Err(A::Error::custom(format!(
                        "unknown field `{k}`; a raw attribute has `type` and `value`"
                    )));
                }
                raw.insert(k, raw_u32(&mut map)?);
            }
            let (Some(&ty), Some(&value)) = (raw.get("type"), raw.get("value")) else {
                return Err(A::Error::custom(
                    "a raw attribute needs both `type` and `value`",
                ));
            };
            return Ok(SvmAttribute::new(ty, value));
        }
        let attr = map.next_value_seed(AttrValue(&key))?;
        if map.next_key::<String>()?.is_some() {
            return Err(A::Error::custom(ONE));
        }
        Ok(attr)
    }
}

/// A list of attributes, through `item` for each.
struct AttrList(AttrItem);

impl<'de> Visitor<'de> for AttrList {
    type Value = Vec<SvmAttribute>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of attributes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(a) = seq.next_element_seed(AttrItem {
            query: self.0.query,
        })? {
            out.push(a);
        }
        Ok(out)
    }
}

/// SET_ATTR's attributes.
pub(super) fn attrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SvmAttribute>, D::Error> {
    d.deserialize_seq(AttrList(AttrItem { query: false }))
}

/// GET_ATTR's queries.
pub(super) fn query<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<SvmAttribute>>, D::Error> {
    d.deserialize_seq(AttrList(AttrItem { query: true }))
        .map(Some)
}

fn outcome_of(s: &str) -> Result<Expect, String> {
    if s.eq_ignore_ascii_case("ok") {
        return Ok(Expect::Ok);
    }
    Errno::from_name(s).map(Expect::Errno).ok_or_else(|| {
        let names: Vec<_> = Errno::ALL.iter().map(|e| e.name()).collect();
        format!("{s:?}: expected \"ok\" or an errno: {}", names.join(", "))
    })
}

/// What an operation returns: `"ok"` or an errno name.
pub(super) fn outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Expect>, D::Error> {
    scalar(d, "\"ok\" or an errno name", |s| match s {
        Scalar::Str(s) => outcome_of(&s),
        _ => Err("expected \"ok\" or an errno name".to_owned()),
    })
    .map(Some)
}

/// What SET_XNACK_MODE returns: an [`outcome`], or the mode afterwards.
pub(super) fn xnack_outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Expect>, D::Error> {
    scalar(
        d,
        "\"ok\", an errno name, or the mode afterwards",
        |s| match s {
            Scalar::Str(s) => outcome_of(&s),
            Scalar::Bool(b) => Ok(Expect::Xnack(b)),
            Scalar::Int(_) => Err("expected \"ok\", an errno name, or true/false".to_owned()),
        },
    )
    .map(Some)
}

/// SET_XNACK_MODE's `enable`: a boolean, or a raw value (negative queries).
pub(super) fn xnack_value<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    scalar(d, "true, false or a raw value", |s| match s {
        Scalar::Int(i) => int(i),
        Scalar::Bool(b) => Ok(i32::from(b)),
        Scalar::Str(_) => Err("expected true, false or a raw value".to_owned()),
    })
}

/// The query value of a SET_XNACK_MODE without `enable`.
pub(super) fn xnack_query() -> i32 {
    -1
}

/// What GET_ATTR returns: an [`outcome`], or a table of answers.
pub(super) fn attr_outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Expect>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Expect;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"ok\", an errno name, or a table of expected answers")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Expect, E> {
            outcome_of(v).map_err(E::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expect, A::Error> {
            let mut e = AttrExpect::default();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "preferred_loc" => e.preferred_loc = Some(map.next_value_seed(LocationSeed)?),
                    "prefetch_loc" => e.prefetch_loc = Some(map.next_value_seed(LocationSeed)?),
                    "set_flags" => e.set_flags = Some(map.next_value_seed(FlagsSeed)?),
                    "clr_flags" => e.clr_flags = Some(map.next_value_seed(FlagsSeed)?),
                    "granularity" => e.granularity = Some(map.next_value_seed(U32Seed)?),
                    "access" => e.access = map.next_value_seed(AccessAnswers)?,
                    k => {
                        return Err(A::Error::custom(format!(
                            "unknown field `{k}`; expected one of: preferred_loc, prefetch_loc, set_flags, clr_flags, granularity, access"
                        )));
                    }
                }
            }
            Ok(Expect::Attrs(e))
        }
    }
    d.deserialize_any(V).map(Some)
}

/// A fill pattern: a 32-bit word, `"page_index"` or `"dword_index"`.
pub(super) fn fill<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fill>, D::Error> {
    scalar(
        d,
        "a 32-bit word, \"page_index\" or \"dword_index\"",
        |s| match s {
            Scalar::Int(i) => int(i).map(Fill::Word),
            Scalar::Str(s) => match s.trim() {
                "page_index" => Ok(Fill::PageIndex),
                "dword_index" => Ok(Fill::DwordIndex),
                other => Err(format!(
                    "{other:?} is not a pattern; expected a 32-bit word, \"page_index\" or \"dword_index\""
                )),
            },
            Scalar::Bool(_) => Err("expected a 32-bit word, \"page_index\" or \"dword_index\"".into()),
        },
    )
    .map(Some)
}

/// A plain unsigned integer.
fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    scalar(d, "an integer", |s| match s {
        Scalar::Int(i) => int(i),
        _ => Err("expected an integer".to_owned()),
    })
}

/// Seeds for the grammars above, to read a value inside a hand-walked map.
macro_rules! seed {
    ($name:ident, $f:path, $t:ty) => {
        struct $name;
        impl<'de> DeserializeSeed<'de> for $name {
            type Value = $t;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$t, D::Error> {
                $f(d)
            }
        }
    };
}
seed!(LocationSeed, location, u32);
seed!(U32Seed, uint, u32);

/// `access = { gpu0 = "access_in_place", ... }` of an expected GET_ATTR:
/// gpu_id to the attribute type the ACCESS query must come back as.
struct AccessAnswers;

impl<'de> DeserializeSeed<'de> for AccessAnswers {
    type Value = BTreeMap<u32, u32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AccessAnswers {
    type Value = BTreeMap<u32, u32>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of GPU name to \"access\", \"access_in_place\" or \"no_access\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let (id, kind) = map.next_value_seed(AccessAnswer(&name))?;
            out.insert(id, kind);
        }
        Ok(out)
    }
}

/// One GPU's answer; the GPU's name is the key, placed at the value.
struct AccessAnswer<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for AccessAnswer<'_> {
    type Value = (u32, u32);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        const HELP: &str = "expected \"access\", \"access_in_place\" or \"no_access\"";
        scalar(d, HELP, |s| {
            let id = in_scope(|n| gpu_named(n, self.0))?;
            let kind = match s {
                Scalar::Str(s) if s == "access" => attr_type::ACCESS,
                Scalar::Str(s) if s == "access_in_place" => attr_type::ACCESS_IN_PLACE,
                Scalar::Str(s) if s == "no_access" => attr_type::NO_ACCESS,
                _ => return Err(HELP.to_owned()),
            };
            Ok((id, kind))
        })
    }
}

/// Per-GPU counters a `counters` check may name (`faults = { gpu0 = 1 }`).
pub const GPU_COUNTERS: [&str; 6] = [
    "faults",
    "page_in",
    "page_out",
    "stale_dma",
    "stragglers_dropped",
    "unmapping_dropped",
];
/// Machine-wide counters a `counters` check may name.
pub const HW_COUNTERS: [&str; 21] = [
    "copy_jobs",
    "cpu_faults",
    "atomic_faults",
    "cpu_timeslice_wait_ns",
    "cpu_throttle_wait_ns",
    "faults_ih_filtered",
    "queue_evictions",
    "queue_restores",
    "pages_to_vram",
    "pages_zero_filled",
    "pages_to_ram",
    "pages_faulted_in",
    "dma_maps",
    "dma_unmaps",
    "ptes_written",
    "ptes_cleared",
    "tlb_flush_legacy",
    "tlb_flush_heavyweight",
    "vram_allocs",
    "vram_frees",
    "bad_dma_unmaps",
];
/// SMI event counts a `counters` check may name.
pub const EVENT_COUNTERS: [&str; 8] = [
    "queue_eviction",
    "queue_restore",
    "queue_restore_rescheduled",
    "migrate_start",
    "migrate_end",
    "page_fault_start",
    "page_fault_end",
    "unmap_from_gpu",
];

/// A `counters` check: each counter named with its expected value.
pub(super) fn counters<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CounterExpect>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<CounterExpect>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of counter names to expected values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if GPU_COUNTERS.contains(&key.as_str()) {
                    for (gpu, want) in map.next_value_seed(PerGpu)? {
                        out.push(CounterExpect {
                            name: key.clone(),
                            gpu: Some(gpu),
                            want,
                        });
                    }
                } else {
                    let want = map.next_value_seed(CounterValue(&key))?;
                    out.push(CounterExpect {
                        name: key,
                        gpu: None,
                        want,
                    });
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// A machine-wide counter's expected value; an unknown name is refused at it.
struct CounterValue<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for CounterValue<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        let key = self.0;
        scalar(d, "a count", |s| {
            if !HW_COUNTERS.contains(&key) && !EVENT_COUNTERS.contains(&key) {
                let all: Vec<&str> = GPU_COUNTERS
                    .iter()
                    .chain(&HW_COUNTERS)
                    .chain(&EVENT_COUNTERS)
                    .copied()
                    .collect();
                return Err(format!(
                    "unknown counter {key:?}; known: {}",
                    all.join(", ")
                ));
            }
            match s {
                Scalar::Int(i) => int(i),
                _ => Err("expected a count".to_owned()),
            }
        })
    }
}

/// `{ gpu0 = 1, gpu1 = 0 }`: a per-GPU counter's expected values.
struct PerGpu;

impl<'de> DeserializeSeed<'de> for PerGpu {
    type Value = Vec<(u32, u64)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PerGpu {
    type Value = Vec<(u32, u64)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of GPU name to count, such as { gpu0 = 1 }")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            out.push(map.next_value_seed(GpuCount(&name))?);
        }
        Ok(out)
    }
}

/// One GPU's count; the GPU's name is the key, placed at the value.
struct GpuCount<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for GpuCount<'_> {
    type Value = (u32, u64);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u32, u64), D::Error> {
        scalar(d, "a count", |s| {
            let id = in_scope(|n| gpu_named(n, self.0))?;
            match s {
                Scalar::Int(i) => Ok((id, int(i)?)),
                _ => Err("expected a count".to_owned()),
            }
        })
    }
}

/// A knob's value as `Config::set` reads it: a string as written, an
/// integer in digits, a boolean as `true`/`false`.
pub(super) fn knob_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    /// A scalar as its text; an array (the `inject` knob's rules, as
    /// tables `{ site, nth | every | probability, errno }`) as the rules'
    /// text, each checked where it stands.
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a whole number, a boolean, or (inject) a list of rules")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut rules = Vec::new();
            while let Some(r) = seq.next_element::<svm_core::inject::Rule>()? {
                if rules.len() == svm_core::inject::MAX_RULES {
                    return Err(de::Error::custom(format!(
                        "more than {} rules",
                        svm_core::inject::MAX_RULES
                    )));
                }
                rules.push(r);
            }
            Ok(svm_core::inject::show_rules(&rules))
        }
    }
    d.deserialize_any(V)
}

/// The SMI event names a `smi` expectation takes, with their kfd ids.
pub const SMI_EVENTS: [(&str, u32); 7] = [
    ("migrate_start", svm_core::events::MIGRATE_START),
    ("migrate_end", svm_core::events::MIGRATE_END),
    ("page_fault_start", svm_core::events::PAGE_FAULT_START),
    ("page_fault_end", svm_core::events::PAGE_FAULT_END),
    ("queue_eviction", svm_core::events::QUEUE_EVICTION),
    ("queue_restore", svm_core::events::QUEUE_RESTORE),
    ("unmap_from_gpu", svm_core::events::UNMAP_FROM_GPU),
];

/// Trigger names, across the three kinds of trigger kfd prints (migration,
/// unmap, queue eviction); each is that kind's uAPI number.
const SMI_TRIGGERS: [(&str, i64); 13] = [
    ("prefetch", 0),
    ("pagefault_gpu", 1),
    ("pagefault_cpu", 2),
    ("ttm_eviction", 3),
    ("mmu_notify", 0),
    ("mmu_notify_migrate", 1),
    ("unmap_from_cpu", 2),
    ("svm", 0),
    ("userptr", 1),
    ("ttm", 2),
    ("suspend", 3),
    ("criu_checkpoint", 4),
    ("criu_restore", 5),
];

/// `expect = [{ event = "migrate_start", addr = "buf", to = "gpu0" }, ...]`
/// of a `smi` op.
pub(super) fn smi_expect<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SmiExpect>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<SmiExpect>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of events such as { event = \"migrate_start\", to = \"gpu0\" }")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(e) = seq.next_element_seed(SmiOne)? {
                out.push(e);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// One expected event.
struct SmiOne;

impl<'de> DeserializeSeed<'de> for SmiOne {
    type Value = SmiExpect;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SmiExpect, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SmiOne {
    type Value = SmiExpect;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event such as { event = \"page_fault_start\", write = true }")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SmiExpect, A::Error> {
        let mut event = None;
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "event" {
                let name: String = map.next_value()?;
                let id = SMI_EVENTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, id)| id)
                    .ok_or_else(|| {
                        let names: Vec<&str> = SMI_EVENTS.iter().map(|(n, _)| *n).collect();
                        A::Error::custom(format!(
                            "unknown event {name:?}; expected one of: {}",
                            names.join(", ")
                        ))
                    })?;
                event = Some(id);
            } else {
                fields.push(map.next_value_seed(SmiField(key))?);
            }
        }
        let event = event.ok_or_else(|| A::Error::custom("an expected event needs `event`"))?;
        // Every field must be one this event's line has.
        let line_fields = svm_core::events::scan_fields(event);
        if let Some((name, _)) = fields.iter().find(|(n, _)| !line_fields.contains(n)) {
            return Err(A::Error::custom(format!(
                "this event's line has no field for {name:?}; it has: {}",
                line_fields.join(", ")
            )));
        }
        Ok(SmiExpect { event, fields })
    }
}

/// One field of an expected event, by its key, converted to what the
/// kernel's line holds: `(field of the line, value)`.
struct SmiField(String);

impl<'de> DeserializeSeed<'de> for SmiField {
    type Value = (&'static str, SmiValue);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let key = self.0;
        scalar(d, "a value", move |s| {
            let num = |v: i64| Ok(SmiValue::Num(v));
            let flag = |name: &'static str, on: char, off: char| match s {
                Scalar::Bool(b) => Ok((name, SmiValue::Char(if b { on } else { off }))),
                _ => Err(format!("`{key}` is true or false")),
            };
            match key.as_str() {
                "addr" => Ok(("addr", SmiValue::Addr(addr_of(s)?))),
                "size" => {
                    let b = size_of(s)?;
                    if b % svm_core::addr::PAGE_SIZE != 0 {
                        return Err(format!(
                            "{b} bytes is not whole pages (the line counts pages)"
                        ));
                    }
                    Ok((
                        "size",
                        SmiValue::Num(
                            i64::try_from(b / svm_core::addr::PAGE_SIZE).unwrap_or(i64::MAX),
                        ),
                    ))
                }
                "from" | "to" | "prefetch_loc" | "preferred_loc" => {
                    let name = match key.as_str() {
                        "from" => "from",
                        "to" => "to",
                        "prefetch_loc" => "prefetch_loc",
                        _ => "preferred_loc",
                    };
                    Ok((name, SmiValue::Num(i64::from(location_of(s)?))))
                }
                "gpu" => Ok(("gpu", SmiValue::Num(i64::from(gpu_of(s)?)))),
                "trigger" => match s {
                    Scalar::Int(i) => num(int(i)?).map(|v| ("trigger", v)),
                    Scalar::Str(t) => SMI_TRIGGERS
                        .iter()
                        .find(|(n, _)| *n == t)
                        .map(|&(_, v)| ("trigger", SmiValue::Num(v)))
                        .ok_or_else(|| {
                            let names: Vec<&str> = SMI_TRIGGERS.iter().map(|(n, _)| *n).collect();
                            format!(
                                "unknown trigger {t:?}; expected a number or one of: {}",
                                names.join(", ")
                            )
                        }),
                    Scalar::Bool(_) => Err("expected a trigger name or number".into()),
                },
                "error" => match s {
                    Scalar::Int(i) => num(int(i)?).map(|v| ("error", v)),
                    Scalar::Str(t) => Errno::from_name(&t)
                        .map(|e| ("error", SmiValue::Num(-i64::from(e.code()))))
                        .ok_or_else(|| format!("{t:?}: expected an errno name or a number")),
                    Scalar::Bool(_) => Err("expected an error code".into()),
                },
                "write" => flag("rw", 'W', 'R'),
                "migrated" => flag("mu", 'M', 'U'),
                "rescheduled" => flag("flag", 'R', '0'),
                other => Err(format!(
                    "unknown event field {other:?}; expected addr, size, from, to, prefetch_loc, \
                     preferred_loc, gpu, trigger, error, write, migrated or rescheduled"
                )),
            }
        })
    }
}
