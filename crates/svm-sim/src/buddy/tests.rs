//! Buddy allocator tests: worked examples, and a property test against a per-page model.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const ANY: AllocFlags = AllocFlags {
    top_down: false,
    contiguous: false,
    range: None,
};

#[test]
fn roots_cover_odd_sizes() {
    // 13 pages: roots of 8, 4 and 1.
    let b = Buddy::new(13);
    assert_eq!(
        b.free_blocks(),
        vec![
            Block {
                offset: 0,
                order: 3
            },
            Block {
                offset: 8,
                order: 2
            },
            Block {
                offset: 12,
                order: 0
            }
        ]
    );
    b.check().unwrap();
}

#[test]
fn split_and_merge() {
    let mut b = Buddy::new(16);
    let x = b.alloc_block(0, ANY).unwrap();
    assert_eq!(
        x,
        Block {
            offset: 0,
            order: 0
        }
    );
    // 16 → 8 + 4 + 2 + 1 free, page 0 used.
    assert_eq!(b.free_blocks_by_order(), vec![1, 1, 1, 1]);
    b.check().unwrap();
    b.free(x);
    assert_eq!(
        b.free_blocks(),
        vec![Block {
            offset: 0,
            order: 4
        }]
    );
    b.check().unwrap();
}

#[test]
fn non_contiguous_alloc_takes_largest_blocks_first() {
    let mut b = Buddy::new(64);
    let got = b.alloc(13, 0, ANY).unwrap();
    assert_eq!(got.iter().map(|x| x.pages()).sum::<u64>(), 13);
    assert_eq!(
        got.iter().map(|x| x.order).collect::<Vec<_>>(),
        vec![3, 2, 0]
    );
    b.check().unwrap();
}

#[test]
fn top_down_and_range() {
    let mut b = Buddy::new(64);
    let top = b
        .alloc_block(
            2,
            AllocFlags {
                top_down: true,
                ..ANY
            },
        )
        .unwrap();
    assert_eq!(
        top,
        Block {
            offset: 60,
            order: 2
        }
    );
    let r = b
        .alloc_block(
            1,
            AllocFlags {
                range: Some((17, 24)),
                ..ANY
            },
        )
        .unwrap();
    assert_eq!(
        r,
        Block {
            offset: 18,
            order: 1
        }
    );
    assert!(
        b.alloc_block(
            3,
            AllocFlags {
                range: Some((17, 24)),
                ..ANY
            }
        )
        .is_none()
    );
    b.check().unwrap();
}

#[test]
fn contiguous_trims_the_tail() {
    let mut b = Buddy::new(64);
    let got = b
        .alloc(
            5,
            0,
            AllocFlags {
                contiguous: true,
                ..ANY
            },
        )
        .unwrap();
    assert_eq!(
        got,
        vec![
            Block {
                offset: 0,
                order: 2
            },
            Block {
                offset: 4,
                order: 0
            }
        ]
    );
    assert_eq!(b.free_pages(), 59);
    b.check().unwrap();
}

#[test]
fn fragmentation_falls_back_to_small_blocks() {
    // 1024 pages; take every other page, so no 2 MiB block is left free.
    let mut b = Buddy::new(1024);
    let all = b.alloc(1024, 0, ANY).unwrap();
    let mut singles = Vec::new();
    for blk in all {
        b.free(blk);
    }
    for _ in 0..1024 {
        singles.push(b.alloc_block(0, ANY).unwrap());
    }
    for x in singles.iter().filter(|x| x.offset % 2 == 0) {
        b.free(*x);
    }
    assert_eq!(b.free_pages(), 512);
    assert_eq!(b.largest_free_order(), Some(0));
    assert!(matches!(
        b.alloc(512, 9, ANY),
        Err(BuddyError::NoSpace { .. })
    ));
    // Nothing leaked from the failed attempt.
    assert_eq!(b.free_pages(), 512);
    let got = b.alloc_with_fallback(512, ANY).unwrap();
    assert_eq!(got.len(), 512);
    assert_eq!(b.free_pages(), 0);
    b.check().unwrap();
}

#[test]
fn bad_requests_are_errors() {
    let mut b = Buddy::new(16);
    assert!(matches!(
        b.alloc(0, 0, ANY),
        Err(BuddyError::Invalid { .. })
    ));
    assert!(matches!(
        b.alloc(17, 0, ANY),
        Err(BuddyError::NoSpace { .. })
    ));
    assert!(matches!(
        b.alloc(u64::MAX, 3, ANY),
        Err(BuddyError::NoSpace { .. })
    ));
    assert!(matches!(
        b.alloc(1, 5, ANY),
        Err(BuddyError::NoSpace { .. })
    ));
    b.check().unwrap();
}

/// Random allocations and frees against a per-page ownership map: blocks
/// never overlap, with minimum order 0 a request succeeds exactly when enough
/// pages are free, and freeing everything merges back to the roots.
#[test]
fn matches_a_page_model() {
    let seed: u64 = 0x5eed_0004;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let op = prop_oneof![
        (1u64..80, 0u8..4, any::<bool>(), any::<bool>())
            .prop_map(|(n, o, t, c)| (true, n, o, t, c)),
        (0u64..1000).prop_map(|i| (false, i, 0, false, false)),
    ];
    let strat = (1u64..300, prop::collection::vec(op, 1..60));
    let result = runner.run(&strat, |(total, ops)| {
        let mut b = Buddy::new(total);
        let mut owner: Vec<Option<usize>> = vec![None; usize::try_from(total).unwrap()];
        let mut live: Vec<Vec<Block>> = Vec::new();
        let initial = b.free_blocks();
        for (is_alloc, n, min_order, top_down, contiguous) in ops {
            if is_alloc {
                let flags = AllocFlags {
                    top_down,
                    contiguous,
                    range: None,
                };
                let free_before = b.free_pages();
                match b.alloc(n, min_order, flags) {
                    Ok(blocks) => {
                        let got: u64 = blocks.iter().map(|x| x.pages()).sum();
                        prop_assert_eq!(got, n.next_multiple_of(1 << min_order));
                        for x in &blocks {
                            for p in x.offset..x.end() {
                                let slot = &mut owner[usize::try_from(p).unwrap()];
                                prop_assert!(slot.is_none(), "page {} handed out twice", p);
                                *slot = Some(live.len());
                            }
                        }
                        live.push(blocks);
                    }
                    Err(_) => {
                        prop_assert_eq!(b.free_pages(), free_before, "a failed alloc leaked");
                        if min_order == 0 && !contiguous {
                            prop_assert!(
                                n > free_before,
                                "{} pages free but {} refused",
                                free_before,
                                n
                            );
                        }
                    }
                }
            } else if !live.is_empty() {
                let i = usize::try_from(n).unwrap() % live.len();
                for x in live.swap_remove(i) {
                    b.free(x);
                    for p in x.offset..x.end() {
                        owner[usize::try_from(p).unwrap()] = None;
                    }
                }
                // swap_remove moved the last allocation to slot i.
                for o in owner.iter_mut().flatten() {
                    if *o == live.len() {
                        *o = i;
                    }
                }
            }
            prop_assert!(b.check().is_ok(), "{:?}", b.check());
            let model_free = owner.iter().filter(|o| o.is_none()).count() as u64;
            prop_assert_eq!(b.free_pages(), model_free);
        }
        for blocks in live {
            for x in blocks {
                b.free(x);
            }
        }
        prop_assert_eq!(
            b.free_blocks(),
            initial,
            "freeing everything did not merge back"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!(
            "SEED={seed:#x}: {e}\nnote: reproduce with `cargo nextest run -p svm-sim buddy::tests::matches_a_page_model`"
        );
    }
}
