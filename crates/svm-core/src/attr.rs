//! Typed SVM attributes: locations, flags, granularity, and the per-range attribute set.
//!
//! The raw uAPI numbers live in [`crate::uapi`]; this module is what the
//! engine reasons with. [`Attrs`] is the attribute part of `struct svm_range`
//! and [`AttrOp`] one validated SET_ATTR attribute. `crate::range_list` applies
//! them; `crate::process` converts them at the API edge.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::PageCount;
use crate::gpu::{GpuId, GpuIndex, GpuMask};
use crate::uapi::{self, flag};

/// Where a page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Location {
    /// System memory (uAPI value 0).
    Sys,
    /// The VRAM of the GPU with this gpu_id.
    Vram(GpuId),
}

impl Location {
    /// The location a uAPI value names; `None` for UNDEFINED (the inverse of
    /// [`Location::to_uapi`]).
    pub fn from_uapi(raw: u32) -> Option<Location> {
        match raw {
            uapi::SVM_LOCATION_SYSMEM => Some(Location::Sys),
            // `GpuId::new` refuses only 0 (taken above) and UNDEFINED.
            _ => GpuId::new(raw).map(Location::Vram),
        }
    }

    /// The uAPI value of an optional location; `None` is UNDEFINED.
    pub fn to_uapi(loc: Option<Location>) -> u32 {
        match loc {
            None => uapi::SVM_LOCATION_UNDEFINED,
            Some(Location::Sys) => uapi::SVM_LOCATION_SYSMEM,
            Some(Location::Vram(id)) => id.raw(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sys => f.write_str("sysmem"),
            Location::Vram(id) => write!(f, "vram@{id}"),
        }
    }
}

/// Migration granularity: log2 of a page count (9 is 512 pages, 2 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Granularity(u8);

impl Granularity {
    /// The kernel's default: 2 MiB windows.
    pub const DEFAULT: Self = Self(9);
    /// The largest value set_attr stores (`min(value, 0x3F)`).
    pub const MAX: Self = Self(0x3F);

    /// The value SET_ATTR stores for a raw request: clamped at [`Self::MAX`].
    pub fn from_uapi(value: u32) -> Self {
        Self(u8::try_from(value.min(u32::from(Self::MAX.0))).expect("clamped to 0x3F"))
    }

    /// The log2 value.
    pub const fn log2(self) -> u8 {
        self.0
    }

    /// The window size in pages.
    pub const fn pages(self) -> PageCount {
        PageCount::new(1u64 << self.0)
    }
}

/// A set of `KFD_IOCTL_SVM_FLAG_*` bits.
///
/// Unknown bits are kept as they were given: kfd stores SET_FLAGS values
/// without checking them, and GET_ATTR hands them back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SvmFlags(u32);

impl SvmFlags {
    /// No flag.
    pub const EMPTY: Self = Self(0);
    /// The flags of a new range: `HOST_ACCESS | COHERENT`.
    pub const DEFAULT: Self = Self(flag::HOST_ACCESS | flag::COHERENT);

    /// Names of the known flags, in bit order, as the CLI and reports spell them.
    pub const NAMES: [(u32, &'static str); 8] = [
        (flag::HOST_ACCESS, "host_access"),
        (flag::COHERENT, "coherent"),
        (flag::HIVE_LOCAL, "hive_local"),
        (flag::GPU_RO, "gpu_ro"),
        (flag::GPU_EXEC, "gpu_exec"),
        (flag::GPU_READ_MOSTLY, "gpu_read_mostly"),
        (flag::GPU_ALWAYS_MAPPED, "gpu_always_mapped"),
        (flag::EXT_COHERENT, "ext_coherent"),
    ];

    /// Wraps raw bits.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: SvmFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: SvmFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// The flag named `name` (case-insensitive), from [`Self::NAMES`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|&(b, _)| Self(b))
    }
}

/// Lists the flag names joined by `|`, unknown bits as hex, and `-` for none.
impl fmt::Display for SvmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut rest = self.0;
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if rest & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !bit;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SvmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SvmFlags({self})")
    }
}

/// The attributes of one SVM range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// Where the range should live; `None` is UNDEFINED.
    pub preferred_loc: Option<Location>,
    /// Where set_attr last asked the range to be prefetched; `None` is UNDEFINED.
    pub prefetch_loc: Option<Location>,
    /// GPUs that may access the range and migrate it to their VRAM.
    pub access: GpuMask,
    /// GPUs that may access the range in place, without migrating it.
    pub access_in_place: GpuMask,
    /// `KFD_IOCTL_SVM_FLAG_*` bits.
    pub flags: SvmFlags,
    /// Migration window of the fault path.
    pub granularity: Granularity,
}

impl Attrs {
    /// The attributes of a new range (`svm_range_set_default_attributes` plus the
    /// access bitmap of `svm_range_new`): every SVM GPU may access it when XNACK
    /// is on, none when it is off.
    pub fn new_range(default_access: GpuMask) -> Self {
        Self {
            preferred_loc: None,
            prefetch_loc: None,
            access: default_access,
            access_in_place: GpuMask::EMPTY,
            flags: SvmFlags::DEFAULT,
            granularity: Granularity::DEFAULT,
        }
    }

    /// Applies one attribute (`svm_range_apply_attrs`).
    pub fn apply(&mut self, op: AttrOp) {
        match op {
            AttrOp::PreferredLoc(l) => self.preferred_loc = l,
            AttrOp::PrefetchLoc(l) => self.prefetch_loc = Some(l),
            AttrOp::Access(g) => {
                self.access.insert(g);
                self.access_in_place.remove(g);
            }
            AttrOp::AccessInPlace(g) => {
                self.access.remove(g);
                self.access_in_place.insert(g);
            }
            AttrOp::NoAccess(g) => {
                self.access.remove(g);
                self.access_in_place.remove(g);
            }
            AttrOp::SetFlags(f) => self.flags = SvmFlags(self.flags.0 | f.0),
            AttrOp::ClrFlags(f) => self.flags = SvmFlags(self.flags.0 & !f.0),
            AttrOp::Granularity(raw) => self.granularity = Granularity::from_uapi(raw),
        }
    }

    /// Whether `ops` would leave these attributes as they are, by kfd's test
    /// (`svm_range_is_same_attrs`).
    ///
    /// A prefetch is never "the same": it always asks for work. Granularity is
    /// compared with the raw requested value, so a request above 0x3F never
    /// matches even though it would store 0x3F.
    pub fn is_same(&self, ops: &[AttrOp]) -> bool {
        ops.iter().all(|&op| match op {
            AttrOp::PreferredLoc(l) => self.preferred_loc == l,
            AttrOp::PrefetchLoc(_) => false,
            AttrOp::Access(g) => self.access.contains(g),
            AttrOp::AccessInPlace(g) => self.access_in_place.contains(g),
            AttrOp::NoAccess(g) => !self.access.contains(g) && !self.access_in_place.contains(g),
            AttrOp::SetFlags(f) => self.flags.contains(f),
            AttrOp::ClrFlags(f) => !self.flags.intersects(f),
            AttrOp::Granularity(raw) => u32::from(self.granularity.0) == raw,
        })
    }
}

/// One validated SET_ATTR attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrOp {
    /// PREFERRED_LOC; `None` is UNDEFINED.
    PreferredLoc(Option<Location>),
    /// PREFETCH_LOC; UNDEFINED is refused by validation.
    PrefetchLoc(Location),
    /// ACCESS for one GPU.
    Access(GpuIndex),
    /// ACCESS_IN_PLACE for one GPU.
    AccessInPlace(GpuIndex),
    /// NO_ACCESS for one GPU.
    NoAccess(GpuIndex),
    /// SET_FLAGS.
    SetFlags(SvmFlags),
    /// CLR_FLAGS.
    ClrFlags(SvmFlags),
    /// GRANULARITY, as requested; stored clamped at 0x3F.
    Granularity(u32),
}

impl AttrOp {
    /// Whether applying this attribute asks for the GPU mappings to be rebuilt
    /// (`update_mapping` in `svm_range_apply_attrs`).
    ///
    /// Access changes only count with XNACK off: with XNACK on, GPUs fault and
    /// map lazily.
    pub fn updates_mapping(self, xnack_enabled: bool) -> bool {
        match self {
            AttrOp::Access(_) | AttrOp::AccessInPlace(_) | AttrOp::NoAccess(_) => !xnack_enabled,
            AttrOp::SetFlags(_) | AttrOp::ClrFlags(_) => true,
            AttrOp::PreferredLoc(_) | AttrOp::PrefetchLoc(_) | AttrOp::Granularity(_) => false,
        }
    }
}

/// One validated GET_ATTR query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrQuery {
    /// PREFERRED_LOC.
    PreferredLoc,
    /// PREFETCH_LOC.
    PrefetchLoc,
    /// ACCESS for the GPU with this gpu_id; answered by rewriting the type.
    Access(u32),
    /// SET_FLAGS: flags set on every range.
    SetFlags,
    /// CLR_FLAGS: flags set on no range.
    ClrFlags,
    /// GRANULARITY: the smallest.
    Granularity,
}

/// How a GPU may reach a range, the answer to an ACCESS query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// ACCESS: may access and migrate.
    Access,
    /// ACCESS_IN_PLACE: may access without migrating.
    AccessInPlace,
    /// NO_ACCESS.
    NoAccess,
}

impl AccessKind {
    /// The attribute type GET_ATTR writes for this answer.
    pub const fn attr_type(self) -> u32 {
        match self {
            AccessKind::Access => uapi::attr_type::ACCESS,
            AccessKind::AccessInPlace => uapi::attr_type::ACCESS_IN_PLACE,
            AccessKind::NoAccess => uapi::attr_type::NO_ACCESS,
        }
    }

    /// The name reports and scenario files use.
    pub const fn name(self) -> &'static str {
        match self {
            AccessKind::Access => "access",
            AccessKind::AccessInPlace => "access_in_place",
            AccessKind::NoAccess => "no_access",
        }
    }
}

/// One GET_ATTR answer, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrValue {
    /// PREFERRED_LOC; `None` is UNDEFINED (unset, or the ranges disagree).
    PreferredLoc(Option<Location>),
    /// PREFETCH_LOC; `None` is UNDEFINED.
    PrefetchLoc(Option<Location>),
    /// ACCESS for the GPU with this gpu_id, and the answer.
    Access(GpuId, AccessKind),
    /// Flags set on every range.
    SetFlags(SvmFlags),
    /// The complement of the flags set on any range.
    ClrFlags(SvmFlags),
    /// Smallest granularity.
    Granularity(Granularity),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(i: usize) -> GpuIndex {
        GpuIndex::new(i).unwrap()
    }

    #[test]
    fn granularity_clamps_at_0x3f() {
        assert_eq!(Granularity::from_uapi(0).log2(), 0);
        assert_eq!(Granularity::from_uapi(9).pages(), PageCount::new(512));
        assert_eq!(Granularity::from_uapi(0x3F), Granularity::MAX);
        assert_eq!(Granularity::from_uapi(0xff), Granularity::MAX);
        assert_eq!(Granularity::from_uapi(u32::MAX), Granularity::MAX);
    }

    #[test]
    fn location_round_trips_through_uapi() {
        let gpu = Location::Vram(GpuId::new(0x1002).unwrap());
        for loc in [None, Some(Location::Sys), Some(gpu)] {
            assert_eq!(Location::from_uapi(Location::to_uapi(loc)), loc);
        }
        assert_eq!(Location::from_uapi(uapi::SVM_LOCATION_UNDEFINED), None);
        assert_eq!(Location::from_uapi(0), Some(Location::Sys));
    }

    #[test]
    fn access_bits_are_exclusive() {
        let mut a = Attrs::new_range(GpuMask::EMPTY);
        a.apply(AttrOp::Access(g(1)));
        assert!(a.access.contains(g(1)));
        a.apply(AttrOp::AccessInPlace(g(1)));
        assert!(!a.access.contains(g(1)));
        assert!(a.access_in_place.contains(g(1)));
        a.apply(AttrOp::NoAccess(g(1)));
        assert!(a.access.is_empty());
        assert!(a.access_in_place.is_empty());
    }

    #[test]
    fn same_attrs_follows_kfd() {
        let mut a = Attrs::new_range(GpuMask::EMPTY);
        a.apply(AttrOp::Access(g(0)));
        // Table: (ops, same?)
        let cases: &[(&[AttrOp], bool)] = &[
            (&[], true),
            (&[AttrOp::Access(g(0))], true),
            (&[AttrOp::Access(g(1))], false),
            (&[AttrOp::NoAccess(g(1))], true),
            (&[AttrOp::PrefetchLoc(Location::Sys)], false), // prefetch always works
            (&[AttrOp::PreferredLoc(None)], true),
            (&[AttrOp::SetFlags(SvmFlags::DEFAULT)], true),
            (
                &[AttrOp::SetFlags(SvmFlags::from_bits(flag::GPU_RO))],
                false,
            ),
            (&[AttrOp::ClrFlags(SvmFlags::from_bits(flag::GPU_RO))], true),
            (
                &[AttrOp::ClrFlags(SvmFlags::from_bits(flag::COHERENT))],
                false,
            ),
            (&[AttrOp::Granularity(9)], true),
            (&[AttrOp::Granularity(0x3F)], false),
        ];
        for (ops, want) in cases {
            assert_eq!(a.is_same(ops), *want, "{ops:?}");
        }
        a.apply(AttrOp::Granularity(0x40));
        assert_eq!(a.granularity, Granularity::MAX);
        // The raw value is compared: 0x40 stored as 0x3F is still "different".
        assert!(!a.is_same(&[AttrOp::Granularity(0x40)]));
    }

    #[test]
    fn flags_display() {
        assert_eq!(SvmFlags::DEFAULT.to_string(), "host_access|coherent");
        assert_eq!(
            SvmFlags::from_bits(0x100 | flag::GPU_RO).to_string(),
            "gpu_ro|0x100"
        );
        assert_eq!(SvmFlags::EMPTY.to_string(), "-");
        assert_eq!(
            SvmFlags::from_name("GPU_EXEC"),
            Some(SvmFlags::from_bits(flag::GPU_EXEC))
        );
    }

    #[test]
    fn update_mapping_depends_on_xnack_for_access_only() {
        assert!(AttrOp::Access(g(0)).updates_mapping(false));
        assert!(!AttrOp::Access(g(0)).updates_mapping(true));
        assert!(AttrOp::SetFlags(SvmFlags::EMPTY).updates_mapping(true));
        assert!(!AttrOp::Granularity(3).updates_mapping(false));
    }
}
