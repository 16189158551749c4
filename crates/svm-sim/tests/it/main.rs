//! Integration tests of the simulated machine and the engine behind it.

// Shared builders: machines, registration helpers, range pictures.
mod support;

// Ports of the KFDTest SVM cases (KFDSVMRangeTest), each run with XNACK off and on.
// New ports of kernel tests go here.
mod kfdtest;

// Machine-level behaviour that no KFDTest covers: several processes, MAP_FIXED,
// transactional set_attr, max-range chunking.
mod machine;

// The fault path: policies, the seed thread, peers, de-duplication, fatal faults.
mod fault;

// VRAM pressure from outside SVM, and the restore work's reschedule rule.
mod pressure;

// Random fault-path sequences over 1-3 GPUs and all policies, checked after every op.
mod random;

// The proptest state machine: engine against the naive per-page reference model.
mod refmodel;

// munmap racing in-flight faults and deferred work, across scheduler seeds.
mod race;

// The timing model under a profile: fault costs, contention.
mod timing;

// Kernels: waves, TLBs, retry faults, fatal faults with XNACK off.
mod kernel;

// One access path: a scenario's accesses and a kernel's give the same state;
// the CPU path resolves the VMA before it migrates.
mod paths;
// The kernel release knob: 2024-2026 changes gated by release.
mod releases;
// Mapping faults pages in, as hmm_range_fault does.
mod faultin;
// fork() with copy-on-write.
mod fork;
// Uniform data stored compactly through fills and migration.
mod compact;

// The policy seam: a fault policy written outside the engine, run unchanged.
mod policy;

// The run's configuration: every knob reaches what it names.
mod config;
