//! Property test: random sequences of appends, reads, reopens, drops, faults and crashes
//! (anywhere, after a roll, after dropping segments, after a failed sync) on the hostile
//! simulated disk, checked against a `Vec` model (the rules are in `common/model.rs`,
//! shared with the `log_model` fuzz target).

mod common;

use common::model::{CrashKind, CrashPoint, Op, run};
use proptest::prelude::*;
use ringlog_engine::Durability;

/// Ops; `sync_faults` allows injected sync failures (and crashes right after one).
fn op(sync_faults: bool) -> impl Strategy<Value = Op> {
    let fault = (any::<bool>(), 0u64..4, prop_oneof![Just(libc::EIO), Just(libc::ENOSPC)])
        .prop_map(move |(sync, after, errno)| Op::Fault { sync: sync && sync_faults, after, errno });
    let crash = (crash_point(), crash_kind(), any::<u64>()).prop_map(move |(after, kind, seed)| {
        let after =
            if !sync_faults && matches!(after, CrashPoint::FailedSync) { CrashPoint::Now } else { after };
        Op::Crash { after, kind, seed }
    });
    prop_oneof![
        6 => prop::collection::vec(0u16..80, 1..6).prop_map(Op::Append),
        3 => any::<usize>().prop_map(Op::Read),
        2 => (any::<usize>(), 1usize..10).prop_map(|(a, b)| Op::ReadFrom(a, b)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
        1 => any::<usize>().prop_map(Op::TruncateBefore),
        3 => crash,
        1 => fault,
    ]
}

fn crash_point() -> impl Strategy<Value = CrashPoint> {
    prop_oneof![
        3 => Just(CrashPoint::Now),
        1 => Just(CrashPoint::Roll),
        1 => Just(CrashPoint::Truncate),
        1 => Just(CrashPoint::FailedSync),
    ]
}

/// Mostly the seeded image, which may keep any mix of what was not synced.
fn crash_kind() -> impl Strategy<Value = CrashKind> {
    prop_oneof![
        1 => Just(CrashKind::Durable),
        1 => Just(CrashKind::InOrder),
        4 => Just(CrashKind::Any),
    ]
}

/// A background syncer every millisecond or 200 bytes.
const INTERVAL: Durability = Durability::Interval { interval_ms: 1, bytes: 200 };

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Syncs never overlap here: with `None` only the caller and the roll sync, and with
    /// `Always` each append waits for its sync before the next op.
    #[test]
    fn log_matches_a_vec_model_through_appends_reopens_drops_faults_and_crashes(
        durability in prop_oneof![Just(Durability::None), Just(Durability::Always)],
        deferred_writes in any::<bool>(),
        ops in prop::collection::vec(op(true), 1..60),
    ) {
        run(durability, deferred_writes, ops);
    }

    /// The interval syncer syncs the active segment while the roll or `Log::sync` may be
    /// syncing it too: with every sync succeeding, that is safe today.
    #[test]
    fn log_with_a_background_syncer_matches_a_vec_model_when_syncs_succeed(
        deferred_writes in any::<bool>(),
        ops in prop::collection::vec(op(false), 1..60),
    ) {
        run(INTERVAL, deferred_writes, ops);
    }

    /// A failed sync on one thread drops the pages; a concurrent sync of the same file on
    /// another thread then succeeds and advances the durable offset over records a crash
    /// loses ("lost durable records: next 4 < durable 9 (FailedSync, Any)").
    #[test]
    fn log_with_a_background_syncer_matches_a_vec_model_through_sync_faults(
        deferred_writes in any::<bool>(),
        ops in prop::collection::vec(op(true), 1..60),
    ) {
        run(INTERVAL, deferred_writes, ops);
    }
}
