//! A naive per-page reference model of the SVM attribute API, the oracle of the property tests.
//!
//! It keeps one attribute record per registered page and one flag per mapped
//! page, and answers SET_ATTR, GET_ATTR, XNACK and queue calls straight from
//! the uAPI description, with raw numbers throughout. It shares no logic with
//! the engine: no ranges, no splitting, no typed attributes. Where the two
//! disagree, one of them misreads the kernel.
//!
//! It is deliberately slow: every call walks every page it covers.

use std::collections::{BTreeMap, BTreeSet};

use svm_core::Errno;
use svm_core::uapi::SvmAttribute;

const PAGE: u64 = 4096;
const UNDEFINED: u32 = 0xffff_ffff;
const DEFAULT_FLAGS: u32 = 0x3;

/// One GPU as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefGpu {
    /// gpu_id.
    pub id: u32,
    /// Supports SVM.
    pub svm: bool,
    /// Can run with XNACK on.
    pub xnack: bool,
}

/// The attributes of one registered page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageAttrs {
    preferred: u32,
    prefetch: u32,
    access: u64,
    aip: u64,
    flags: u32,
    granularity: u32,
}

/// The model of one process on one machine.
#[derive(Clone, Debug)]
pub struct RefModel {
    gpus: Vec<RefGpu>,
    xnack: bool,
    queues: BTreeSet<u32>,
    next_queue: u32,
    limit: u64,
    used: u64,
    /// Mapped pages; `true` for I/O mappings.
    mapped: BTreeMap<u64, bool>,
    /// Registered pages.
    pages: BTreeMap<u64, PageAttrs>,
}

impl RefModel {
    /// A process on these GPUs with this boot XNACK default and memory limit.
    pub fn new(gpus: Vec<RefGpu>, xnack_default: bool, limit_bytes: u64) -> Self {
        let xnack = xnack_default && gpus.iter().all(|g| !g.svm || g.xnack);
        Self {
            gpus,
            xnack,
            queues: BTreeSet::new(),
            next_queue: 1,
            limit: limit_bytes,
            used: 0,
            mapped: BTreeMap::new(),
            pages: BTreeMap::new(),
        }
    }

    /// Whether XNACK is on.
    pub fn xnack(&self) -> bool {
        self.xnack
    }

    /// Bytes reserved against the limit.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Registered pages, for comparison with the engine's ranges.
    pub fn registered_pages(&self) -> usize {
        self.pages.len()
    }

    fn supported(&self) -> u64 {
        self.gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| g.svm)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    fn index_of(&self, id: u32) -> Option<usize> {
        self.gpus.iter().position(|g| g.id == id)
    }

    fn drop_pages(&mut self, first: u64, n: u64) {
        for page in first..first + n {
            if self.pages.remove(&page).is_some() && !self.xnack {
                self.used -= PAGE;
            }
        }
    }

    /// `mmap(MAP_FIXED)` of `n` pages at page `first`.
    pub fn mmap(&mut self, first: u64, n: u64, io: bool) {
        self.drop_pages(first, n);
        for page in first..first + n {
            self.mapped.insert(page, io);
        }
    }

    /// `munmap` of `n` pages at page `first`.
    pub fn munmap(&mut self, first: u64, n: u64) {
        self.drop_pages(first, n);
        for page in first..first + n {
            self.mapped.remove(&page);
        }
    }

    fn pages_of(start: u64, size: u64) -> Result<(u64, u64), Errno> {
        if start % PAGE != 0 || size % PAGE != 0 || start == 0 || size == 0 {
            return Err(Errno::Einval);
        }
        Ok((start / PAGE, size / PAGE))
    }

    fn all_usable(&self, first: u64, n: u64) -> Result<(), Errno> {
        for page in first..first + n {
            match self.mapped.get(&page) {
                Some(false) => {}
                _ => return Err(Errno::Efault),
            }
        }
        Ok(())
    }

    /// SET_ATTR.
    ///
    /// # Errors
    /// The errno the kernel returns.
    pub fn set_attr(&mut self, start: u64, size: u64, attrs: &[SvmAttribute]) -> Result<(), Errno> {
        let (first, n) = Self::pages_of(start, size)?;
        let supported = self.supported();
        for a in attrs {
            let svm_gpu = self
                .index_of(a.value)
                .is_some_and(|i| supported & 1 << i != 0);
            let ok = match a.ty {
                0 => a.value == 0 || a.value == UNDEFINED || svm_gpu,
                1 => a.value == 0 || svm_gpu,
                2..=4 => svm_gpu,
                5..=7 => true,
                _ => false,
            };
            if !ok {
                return Err(Errno::Einval);
            }
        }
        self.all_usable(first, n)?;
        let fresh = (first..first + n)
            .filter(|p| !self.pages.contains_key(p))
            .count() as u64;
        if !self.xnack {
            if self.used + fresh * PAGE > self.limit {
                return Err(Errno::Enomem);
            }
            self.used += fresh * PAGE;
        }
        let default = PageAttrs {
            preferred: UNDEFINED,
            prefetch: UNDEFINED,
            access: if self.xnack { supported } else { 0 },
            aip: 0,
            flags: DEFAULT_FLAGS,
            granularity: 9,
        };
        let bit = |v: u32| self.index_of(v).map_or(0, |i| 1u64 << i);
        let bits: Vec<u64> = attrs.iter().map(|a| bit(a.value)).collect();
        for page in first..first + n {
            let p = self.pages.entry(page).or_insert(default);
            for (a, &b) in attrs.iter().zip(&bits) {
                match a.ty {
                    0 => p.preferred = a.value,
                    1 => p.prefetch = a.value,
                    2 => {
                        p.access |= b;
                        p.aip &= !b;
                    }
                    3 => {
                        p.access &= !b;
                        p.aip |= b;
                    }
                    4 => {
                        p.access &= !b;
                        p.aip &= !b;
                    }
                    5 => p.flags |= a.value,
                    6 => p.flags &= !a.value,
                    7 => p.granularity = a.value.min(0x3f),
                    _ => unreachable!("checked above"),
                }
            }
        }
        Ok(())
    }

    /// GET_ATTR; returns the attributes as the kernel writes them back.
    ///
    /// # Errors
    /// The errno the kernel returns.
    pub fn get_attr(
        &self,
        start: u64,
        size: u64,
        attrs: &[SvmAttribute],
    ) -> Result<Vec<SvmAttribute>, Errno> {
        let (first, n) = Self::pages_of(start, size)?;
        self.all_usable(first, n)?;
        if attrs.iter().any(|a| !matches!(a.ty, 0 | 1 | 2 | 5 | 6 | 7)) {
            return Err(Errno::Einval);
        }
        let covered: Vec<&PageAttrs> = self.pages.range(first..first + n).map(|(_, a)| a).collect();
        let common = |f: fn(&PageAttrs) -> u32| {
            let v = f(covered[0]);
            if covered.iter().all(|a| f(a) == v) {
                v
            } else {
                UNDEFINED
            }
        };
        let (preferred, prefetch, access, aip, and, or, gran) = if covered.is_empty() {
            let access = if self.xnack { self.supported() } else { 0 };
            (
                UNDEFINED,
                UNDEFINED,
                access,
                0,
                DEFAULT_FLAGS,
                DEFAULT_FLAGS,
                9,
            )
        } else {
            (
                common(|a| a.preferred),
                common(|a| a.prefetch),
                covered.iter().fold(self.supported(), |m, a| m & a.access),
                covered.iter().fold(self.supported(), |m, a| m & a.aip),
                covered.iter().fold(u32::MAX, |m, a| m & a.flags),
                covered.iter().fold(0, |m, a| m | a.flags),
                covered.iter().map(|a| a.granularity).min().unwrap_or(9),
            )
        };
        attrs
            .iter()
            .map(|a| {
                Ok(match a.ty {
                    0 => SvmAttribute::new(0, preferred),
                    1 => SvmAttribute::new(1, prefetch),
                    2 => {
                        let i = self.index_of(a.value).ok_or(Errno::Einval)?;
                        let ty = if access & 1 << i != 0 {
                            2
                        } else if aip & 1 << i != 0 {
                            3
                        } else {
                            4
                        };
                        SvmAttribute::new(ty, a.value)
                    }
                    5 => SvmAttribute::new(5, and),
                    6 => SvmAttribute::new(6, !or),
                    _ => SvmAttribute::new(7, gran),
                })
            })
            .collect()
    }

    /// SET_XNACK_MODE; returns the mode after the call.
    ///
    /// # Errors
    /// The errno the kernel returns.
    pub fn set_xnack(&mut self, value: i32) -> Result<i32, Errno> {
        if value >= 0 {
            let enable = value != 0;
            if !self.queues.is_empty() {
                return Err(Errno::Ebusy);
            }
            if enable != self.xnack {
                if enable && self.gpus.iter().any(|g| g.svm && !g.xnack) {
                    return Err(Errno::Eperm);
                }
                let bytes = self.pages.len() as u64 * PAGE;
                if enable {
                    self.used -= bytes;
                } else {
                    if self.used + bytes > self.limit {
                        return Err(Errno::Enomem);
                    }
                    self.used += bytes;
                }
                self.xnack = enable;
            }
        }
        Ok(i32::from(self.xnack))
    }

    /// Creates a queue.
    ///
    /// # Errors
    /// EINVAL for an unknown GPU.
    pub fn create_queue(&mut self, gpu_id: u32) -> Result<u32, Errno> {
        self.index_of(gpu_id).ok_or(Errno::Einval)?;
        let q = self.next_queue;
        self.next_queue += 1;
        self.queues.insert(q);
        Ok(q)
    }

    /// Destroys a queue.
    ///
    /// # Errors
    /// EINVAL for an unknown queue.
    pub fn destroy_queue(&mut self, q: u32) -> Result<(), Errno> {
        if self.queues.remove(&q) {
            Ok(())
        } else {
            Err(Errno::Einval)
        }
    }
}
