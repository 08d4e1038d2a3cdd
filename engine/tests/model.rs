//! Property test: random sequences of appends, reads, reopens, drops and crashes on the
//! simulated disk, checked against a `Vec` model (the rules are in `common/model.rs`,
//! shared with the `log_model` fuzz target).

mod common;

use common::model::{Op, run};
use proptest::prelude::*;
use ringlog_engine::Durability;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0u16..80, 1..6).prop_map(Op::Append),
        3 => any::<usize>().prop_map(Op::Read),
        2 => (any::<usize>(), 1usize..10).prop_map(|(a, b)| Op::ReadFrom(a, b)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
        1 => any::<usize>().prop_map(Op::TruncateBefore),
        2 => (any::<bool>(), any::<u64>()).prop_map(|(torn, seed)| Op::Crash { torn, seed }),
        1 => (any::<bool>(), 0u64..4, prop_oneof![Just(libc::EIO), Just(libc::ENOSPC)])
            .prop_map(|(sync, after, errno)| Op::Fault { sync, after, errno }),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::None),
        Just(Durability::Always),
        Just(Durability::Interval { interval_ms: 1, bytes: 200 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_model_through_appends_reopens_drops_and_crashes(
        durability in durability(),
        deferred_writes in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(durability, deferred_writes, ops);
    }
}
