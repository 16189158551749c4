//! GPU identities: the kfd `gpu_id`, the per-process GPU index, and typed per-GPU sets and arrays.
//!
//! kfd names a GPU two ways. User space passes the `gpu_id` (a 32-bit value
//! from the topology); inside a process, attribute bitmaps are indexed by the
//! GPU's position in the process's device list (`kfd_process_gpuidx_from_gpuid`).
//! [`GpuId`] is the first, [`GpuIndex`] the second; [`GpuMask`] and [`PerGpu`]
//! are indexed by [`GpuIndex`] only, so the two cannot be mixed up.

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::{Deserialize, Serialize};

/// The most GPUs one process can use (`MAX_GPU_INSTANCE` in kfd).
pub const MAX_GPU_INSTANCE: usize = 64;

/// A kfd `gpu_id`, as user space names a GPU.
///
/// # Invariants
/// Never 0 (that value means system memory) and never `0xffffffff` (undefined
/// location), so a `GpuId` can always stand in a location attribute.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct GpuId(u32);

impl GpuId {
    /// Wraps a raw gpu_id, or `None` for the two values reserved for locations.
    pub const fn new(raw: u32) -> Option<Self> {
        match raw {
            0 | u32::MAX => None,
            _ => Some(Self(raw)),
        }
    }

    /// The raw gpu_id.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for GpuId {
    type Error = String;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        Self::new(raw).ok_or_else(|| format!("{raw:#x} is reserved and cannot be a gpu_id"))
    }
}

impl From<GpuId> for u32 {
    fn from(id: GpuId) -> u32 {
        id.0
    }
}

impl fmt::Debug for GpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuId({:#x})", self.0)
    }
}

impl fmt::Display for GpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A GPU's position in one process's device list.
///
/// # Invariants
/// Less than [`MAX_GPU_INSTANCE`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuIndex(u8);

impl GpuIndex {
    /// Wraps an index, or `None` if it is not below [`MAX_GPU_INSTANCE`].
    pub fn new(index: usize) -> Option<Self> {
        (index < MAX_GPU_INSTANCE).then(|| Self(u8::try_from(index).expect("index below 64")))
    }

    /// The index as a `usize`.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for GpuIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpu#{}", self.0)
    }
}

impl fmt::Display for GpuIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of per-process GPU indices (kfd's `DECLARE_BITMAP(.., MAX_GPU_INSTANCE)`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuMask(u64);

impl GpuMask {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// The set of the first `n` indices.
    ///
    /// # Panics
    /// If `n` exceeds [`MAX_GPU_INSTANCE`].
    pub fn first(n: usize) -> Self {
        assert!(n <= MAX_GPU_INSTANCE, "more GPUs than MAX_GPU_INSTANCE");
        if n == MAX_GPU_INSTANCE {
            Self(u64::MAX)
        } else {
            Self((1u64 << n) - 1)
        }
    }

    /// The set holding only `gpu`.
    pub const fn only(gpu: GpuIndex) -> Self {
        Self(1 << gpu.0)
    }

    /// The raw bits, bit `i` for index `i`.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `gpu` is in the set.
    pub const fn contains(self, gpu: GpuIndex) -> bool {
        self.0 & (1 << gpu.0) != 0
    }

    /// Adds `gpu`.
    pub fn insert(&mut self, gpu: GpuIndex) {
        self.0 |= 1 << gpu.0;
    }

    /// Removes `gpu`.
    pub fn remove(&mut self, gpu: GpuIndex) {
        self.0 &= !(1 << gpu.0);
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of GPUs in the set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The GPUs in both sets.
    #[must_use]
    pub const fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The GPUs in either set.
    #[must_use]
    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Iterates the indices in ascending order.
    pub fn iter(self) -> impl Iterator<Item = GpuIndex> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            Some(GpuIndex(u8::try_from(i).expect("bit index below 64")))
        })
    }
}

impl fmt::Debug for GpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<GpuIndex> for GpuMask {
    fn from_iter<I: IntoIterator<Item = GpuIndex>>(iter: I) -> Self {
        let mut m = Self::EMPTY;
        for g in iter {
            m.insert(g);
        }
        m
    }
}

/// One value per GPU of a process, indexed by [`GpuIndex`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerGpu<T>(Vec<T>);

impl<T> PerGpu<T> {
    /// Builds the array from one value per GPU, in index order.
    ///
    /// # Panics
    /// If there are more than [`MAX_GPU_INSTANCE`] values.
    pub fn from_vec(values: Vec<T>) -> Self {
        assert!(
            values.len() <= MAX_GPU_INSTANCE,
            "more GPUs than MAX_GPU_INSTANCE"
        );
        Self(values)
    }

    /// Number of GPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no GPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value for `gpu`, or `None` if the process has no such GPU.
    pub fn get(&self, gpu: GpuIndex) -> Option<&T> {
        self.0.get(gpu.get())
    }

    /// Iterates `(index, value)` in index order.
    pub fn iter(&self) -> impl Iterator<Item = (GpuIndex, &T)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, v)| (GpuIndex::new(i).expect("PerGpu holds at most 64 values"), v))
    }

    /// The set of all indices.
    pub fn mask(&self) -> GpuMask {
        GpuMask::first(self.0.len())
    }
}

impl<T> Index<GpuIndex> for PerGpu<T> {
    type Output = T;

    fn index(&self, gpu: GpuIndex) -> &T {
        &self.0[gpu.get()]
    }
}

impl<T> IndexMut<GpuIndex> for PerGpu<T> {
    fn index_mut(&mut self, gpu: GpuIndex) -> &mut T {
        &mut self.0[gpu.get()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(i: usize) -> GpuIndex {
        GpuIndex::new(i).unwrap()
    }

    #[test]
    fn gpu_id_rejects_location_values() {
        assert!(GpuId::new(0).is_none());
        assert!(GpuId::new(0xffff_ffff).is_none());
        assert_eq!(GpuId::new(0x1002).unwrap().raw(), 0x1002);
    }

    #[test]
    fn mask_ops() {
        let mut m = GpuMask::EMPTY;
        m.insert(idx(0));
        m.insert(idx(63));
        assert!(m.contains(idx(63)));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![idx(0), idx(63)]);
        m.remove(idx(0));
        assert_eq!(m.len(), 1);
        assert_eq!(GpuMask::first(64).len(), 64);
        assert_eq!(GpuMask::first(3).bits(), 0b111);
        assert!(GpuIndex::new(64).is_none());
    }

    #[test]
    fn per_gpu_indexing() {
        let mut a = PerGpu::from_vec(vec![1, 2, 3]);
        a[idx(1)] = 20;
        assert_eq!(a[idx(1)], 20);
        assert_eq!(a.get(idx(3)), None);
        assert_eq!(a.mask(), GpuMask::first(3));
    }
}
