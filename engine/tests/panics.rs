//! A panic on an engine thread (the appender, or the syncer that completes durable
//! appends) poisons the log with the panic's message: waiting readers and appenders fail
//! with it instead of hanging, and `close` reports it.

mod common;

use std::thread;

use bytes::Bytes;
use common::fixtures;
use ringlog_engine::{Durability, Entry, EntryId, EntryKind, Error};

#[test]
fn a_panic_on_an_engine_thread_fails_every_waiter_with_the_reason() {
    for durability in [Durability::None, Durability::Always] {
        for f in fixtures(|c| c.durability = durability) {
            let log = f.open();
            log.append(&b"before"[..]).unwrap();
            // A follower waits for the next record.
            let follower = {
                let log = log.clone();
                thread::spawn(move || log.wait_for_blocking(1, None))
            };
            // A callback that panics runs on the engine thread that completes the append:
            // the appender with `None`, the syncer with `Always`.
            let entry = Entry {
                id: EntryId { term: 1, index: 1 },
                kind: EntryKind::Data,
                timestamp_ms: 0,
                payload: Bytes::from_static(b"boom"),
            };
            let published = log.append_entries(vec![entry], |_| panic!("injected panic")).unwrap();
            let _ = published.wait();
            let what = format!("[{} {durability:?}]", f.name);
            // The follower is released either by the record (published before the panic)
            // or by the poison; then the log is poisoned with the panic's message.
            let _ = follower.join().unwrap();
            // Nothing appends offset 10: only the poison wakes this waiter.
            let woken = log.wait_for_blocking(10, None).unwrap_err();
            assert!(woken.to_string().contains("injected panic"), "{what} {woken}");
            let reason = log.poisoned().unwrap();
            assert!(reason.contains("panicked") && reason.contains("injected panic"), "{what} {reason}");
            let later = log.append(&b"after"[..]).unwrap_err();
            assert!(matches!(&later, Error::Poisoned(r) if r.contains("injected panic")), "{what} {later}");
            let closed = log.close().unwrap_err();
            assert!(
                closed.to_string().contains("injected panic"),
                "{what} close reports the poison: {closed}"
            );
            drop(log);
            // Reopening recovers what the disk holds.
            let log = f.open();
            assert_eq!(log.read(0).unwrap().value, Bytes::from_static(b"before"), "{what}");
        }
    }
}
