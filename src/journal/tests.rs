//! The journal end to end: real files in temp directories, reopened as a restarted server would.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::frame::{NextRecord, RecordReader};
use super::*;

const BOOT: &str = "boot-one";

fn options(fsync: FsyncPolicy) -> LogOptions {
    LogOptions { fsync, segment_bytes: 256, boot_id: BOOT.into(), repair: false }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// (None for a snapshot payload, Some(lsn) for a log record, payload)
type Contents = Vec<(Option<Lsn>, Vec<u8>)>;

fn contents(recovery: Recovery) -> Contents {
    let mut out = Vec::new();
    recovery
        .for_each(|record| {
            out.push(match record {
                RecoveredRecord::Snapshot(payload) => (None, payload.to_vec()),
                RecoveredRecord::Logged { lsn, payload } => (Some(lsn), payload.to_vec()),
            });
            Ok::<_, LogError>(())
        })
        .unwrap();
    out
}

fn logged(first_lsn: Lsn, payloads: &[Vec<u8>]) -> Contents {
    payloads.iter().enumerate().map(|(i, p)| (Some(first_lsn + i as Lsn), p.clone())).collect()
}

fn payload(i: usize) -> Vec<u8> {
    format!("record {i} {}", "x".repeat(i % 37)).into_bytes()
}

/// Appends one record at a time, each released before the next (so small segments fill up and
/// roll over as they would under a trickle of requests).
fn append_all(log: &Log, payloads: &[Vec<u8>]) -> Lsn {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut last = 0;
    for payload in payloads {
        last = log.append(payload);
        runtime.block_on(log.released(last, Gather::WithOthers)).unwrap();
    }
    last
}

fn first_lsn_of(segment: &Path) -> Lsn {
    segment.file_stem().unwrap().to_str().unwrap()["journal-".len()..].parse().unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Byte offsets where each record of a segment starts, plus the end of the last one.
fn record_starts(segment: &Path) -> Vec<u64> {
    let bytes = fs::read(segment).unwrap();
    let (_, header_len) = frame::read_segment_header(&mut bytes.as_slice()).unwrap().unwrap();
    let mut reader = RecordReader::new(&bytes[header_len as usize..], header_len, bytes.len() as u64);
    let mut starts = vec![header_len];
    while let NextRecord::Record { .. } = reader.next_record().unwrap() {
        starts.push(reader.offset());
    }
    starts
}

/// How many entries each record of a segment holds, in order.
fn entries_per_record(segment: &Path) -> Vec<u64> {
    let bytes = fs::read(segment).unwrap();
    let (header, header_len) = frame::read_segment_header(&mut bytes.as_slice()).unwrap().unwrap();
    let mut reader = RecordReader::new(&bytes[header_len as usize..], header_len, bytes.len() as u64);
    let mut counts = Vec::new();
    while let NextRecord::Record { payload, .. } = reader.next_record().unwrap() {
        counts.push(frame::count_entries(header.version, payload).unwrap());
    }
    counts
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn records_round_trip_across_segments_and_lsns_continue_after_reopen() {
    let temp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..500).map(payload).collect();
    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    assert_eq!(recovery.last_lsn, 0);
    assert!(contents(recovery).is_empty());
    assert_eq!(append_all(&log, &payloads), 500);
    assert!(log.status().segments > 10, "{:?}", log.status());
    log.close().unwrap();
    drop(log);

    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    assert_eq!(recovery.last_lsn, 500);
    assert!(recovery.clean_shutdown && !recovery.boot_id_changed);
    assert_eq!(contents(recovery), logged(1, &payloads));
    assert_eq!(log.append(b"next"), 501);
    block_on(log.released(501, Gather::WithOthers)).unwrap();
    drop(log);

    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    let mut expected = logged(1, &payloads);
    expected.push((Some(501), b"next".to_vec()));
    assert!(!recovery.clean_shutdown);
    assert_eq!(contents(recovery), expected);
}

#[test]
fn reopening_without_appending_reuses_the_empty_segment() {
    let temp = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
        drop(log);
    }
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &[b"a".to_vec()]);
    log.close().unwrap();
    drop(log);
    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    assert_eq!(contents(recovery), vec![(Some(1), b"a".to_vec())]);
    assert_eq!(segment_files(temp.path()).len(), 2);
}

#[test]
fn clean_shutdown_and_boot_id_are_detected() {
    let temp = tempfile::tempdir().unwrap();
    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    assert!(!recovery.clean_shutdown && !recovery.boot_id_changed, "a new journal");
    append_all(&log, &[b"a".to_vec()]);
    log.close().unwrap();
    drop(log);

    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    assert!(recovery.clean_shutdown && !recovery.boot_id_changed);
    drop(log); // a crash

    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    assert!(!recovery.clean_shutdown, "the mark is consumed by the open before the crash");
    log.close().unwrap();
    drop(log);

    let rebooted = LogOptions { boot_id: "boot-two".into(), ..options(FsyncPolicy::No) };
    let (log, recovery) = Log::open(temp.path(), rebooted.clone()).unwrap();
    assert!(recovery.clean_shutdown && recovery.boot_id_changed);
    drop(log);
    let (_log, recovery) = Log::open(temp.path(), rebooted).unwrap();
    assert!(!recovery.clean_shutdown && !recovery.boot_id_changed);
}

#[test]
fn a_second_open_of_the_same_directory_fails_while_the_first_is_open() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    let error = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap_err();
    assert!(matches!(error, LogError::Locked { .. }), "{error}");
    assert!(error.to_string().contains(&temp.path().display().to_string()));
    drop(log);
    Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
}

#[test]
fn always_releases_only_after_an_fsync() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Always)).unwrap();
    for i in 0..20 {
        let lsn = log.append(&payload(i));
        block_on(log.released(lsn, Gather::WithOthers)).unwrap();
        let status = log.status();
        assert!(status.synced_lsn >= lsn && status.fsyncs >= 1, "{status:?}");
        assert_eq!(status.current_segment_synced_bytes, fs::metadata(&status.current_segment).unwrap().len());
    }
    // Failing fsyncs hold releases back.
    log.inject_failure(Some(std::io::ErrorKind::Other));
    let lsn = log.append(b"held");
    assert!(block_on(log.released(lsn, Gather::WithOthers)).is_err());
    assert!(!log.is_released(lsn));
    assert!(log.status().synced_lsn < lsn);
}

/// Spawns `count` tasks on the current runtime that each append a record and wait for its
/// release, as connections do; the last LSN once every one is released.
async fn append_on_tasks_and_wait(log: &Arc<Log>, count: usize) -> Lsn {
    let waiters: Vec<_> = (0..count)
        .map(|i| {
            let log = Arc::clone(log);
            tokio::spawn(async move {
                let lsn = log.append(&payload(i));
                log.released(lsn, Gather::WithOthers).await.map(|()| lsn)
            })
        })
        .collect();
    let mut last = 0;
    for waiter in waiters {
        let lsn = tokio::time::timeout(Duration::from_secs(30), waiter).await.expect("woken").unwrap().unwrap();
        last = last.max(lsn);
    }
    last
}

/// Under `always` the waiters of an event loop wait on its relay's notify, not on the journal's:
/// the relay must wake them for every release and every failure, or they wait forever.
#[test]
fn under_always_a_loops_relay_wakes_its_waiters_for_releases_and_failures() {
    let temp = tempfile::tempdir().unwrap();
    let (everysec, _) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    assert!(everysec.release_relay().is_none(), "only `always` waits on another thread");
    drop(everysec);
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Always)).unwrap();
    let log = Arc::new(log);
    block_on(async {
        let relay = tokio::spawn(log.release_relay().expect("`always` relays"));
        tokio::task::yield_now().await;
        let last = append_on_tasks_and_wait(&log, 64).await;
        assert!(log.status().synced_lsn >= last);
        log.inject_failure(Some(std::io::ErrorKind::Other));
        let lsn = log.append(b"held");
        let held = tokio::time::timeout(Duration::from_secs(30), log.released(lsn, Gather::WithOthers)).await;
        assert!(held.expect("woken by the failure").is_err());
        relay.abort();
    });
}

/// Group commit under `always` as Redis does it, one fsync per turn of an event loop: the
/// records of every request the turn served go in one batch, not the first record alone.
#[test]
fn under_always_one_fsync_covers_every_record_a_loops_turn_appended() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) =
        Log::open(temp.path(), LogOptions { segment_bytes: 1 << 20, ..options(FsyncPolicy::Always) }).unwrap();
    let log = Arc::new(log);
    block_on(async {
        let relay = tokio::spawn(log.release_relay().expect("`always` relays"));
        tokio::task::yield_now().await;
        append_on_tasks_and_wait(&log, 200).await;
        relay.abort();
    });
    let status = log.status();
    assert_eq!((status.fsyncs, status.synced_lsn), (1, 200), "{status:?}");
}

/// A record appended on an event loop waits for the end of the loop's turn under `always`; one
/// that no reply waits for (a lease ran out) must still be written, when the loop goes to sleep.
#[test]
fn under_always_a_record_no_reply_waits_for_is_written_when_its_loop_sleeps() {
    let temp = tempfile::tempdir().unwrap();
    synced_after_a_task_of_an_always_loop(temp.path(), |log| log.append(b"lease ran out"));
}

/// Under `always`, records appended by a thread working for an event loop that waits for it (a
/// long line's DONEs on the spare core) are left to that loop's turn, as its own are: nothing is
/// synced while the loop waits, and one fsync covers them all once it goes to sleep.
#[test]
fn under_always_records_appended_for_a_waiting_loop_wait_for_its_turn() {
    let temp = tempfile::tempdir().unwrap();
    let log = synced_after_a_task_of_an_always_loop(temp.path(), |log| {
        let append_all = || (0..100).fold(None, |_, _| Some(log.append(b"paid"))).unwrap();
        let last = std::thread::scope(|scope| scope.spawn(|| appending_for_a_waiting_loop(append_all)).join().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(log.status().fsyncs, 0, "nothing asked for while the loop waits");
        owe_flush_on_this_loop();
        last
    });
    assert_eq!(log.status().fsyncs, 1, "{:?}", log.status());
}

/// Runs `task` on an event loop of its own over a journal in `dir` under `always` (its relay
/// running, and asking for its turn's records as it goes to sleep, as the server's loops do),
/// then waits until the record whose position `task` returns is synced.
fn synced_after_a_task_of_an_always_loop(dir: &Path, task: impl FnOnce(&Log) -> Lsn + Send + 'static) -> Arc<Log> {
    let (log, _) = Log::open(dir, options(FsyncPolicy::Always)).unwrap();
    let log = Arc::new(log);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(flush_owed_records).build().unwrap();
    runtime.block_on(async {
        let relay = tokio::spawn(log.release_relay().expect("`always` relays"));
        tokio::task::yield_now().await;
        let lsn = tokio::spawn({
            let log = Arc::clone(&log);
            async move { task(&log) }
        })
        .await
        .unwrap();
        let synced = tokio::time::timeout(Duration::from_secs(30), async {
            while log.status().synced_lsn < lsn {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        synced.await.expect("synced once the loop slept");
        relay.abort();
    });
    log
}

#[test]
fn no_policy_never_fsyncs_but_append_synced_does() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &[b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(log.status().fsyncs, 0);
    log.append(b"c");
    let reserved = log.append_synced(b"reserve");
    block_on(log.released(reserved, Gather::WithOthers)).unwrap();
    let status = log.status();
    assert!(status.fsyncs >= 1 && status.synced_lsn >= reserved, "{status:?}");
}

#[test]
fn everysec_fsyncs_in_the_background() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    let last = append_all(&log, &[b"a".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.status().synced_lsn < last {
        assert!(Instant::now() < deadline, "no background fsync within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = log.status();
    assert!(status.fsyncs >= 1 && status.last_fsync_unix_secs.is_some(), "{status:?}");
}

/// Under everysec and no the replies' tasks write the records; one nobody waits for (a lease
/// that ran out with nobody in line) is written by the writer thread's poll, also after the
/// thread went to sleep for want of work.
#[test]
fn records_nobody_waits_for_are_written_anyway() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    let written = |lsn| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.status().written_lsn < lsn {
            assert!(Instant::now() < deadline, "record {lsn} was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    written(log.append(b"polled"));
    // Long enough for the writer thread to stop polling and sleep until woken.
    std::thread::sleep(Duration::from_millis(1_500));
    written(log.append(b"after a sleep"));
    written(log.append(b"polled again"));
}

#[test]
fn a_failing_disk_holds_records_and_resumes_without_losing_any() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &[b"before".to_vec()]);
    log.inject_failure(Some(std::io::ErrorKind::StorageFull));
    let during: Vec<Vec<u8>> = (0..50).map(payload).collect();
    let mut last = 0;
    for payload in &during {
        last = log.append(payload);
    }
    let error = block_on(log.released(last, Gather::WithOthers)).unwrap_err();
    assert!(matches!(error, LogError::WriteFailing(_)), "{error}");
    assert!(log.write_failing().is_some());
    assert!(log.status().unwritten_bytes > 0);

    log.inject_failure(None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while block_on(log.released(last, Gather::WithOthers)).is_err() {
        assert!(Instant::now() < deadline, "the writer did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log.write_failing().is_none());
    append_all(&log, &[b"after".to_vec()]);
    log.close().unwrap();
    drop(log);

    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    let mut expected = vec![b"before".to_vec()];
    expected.extend(during);
    expected.push(b"after".to_vec());
    assert_eq!(contents(recovery), logged(1, &expected));
}

#[test]
fn close_reports_a_failing_disk_and_writes_no_mark() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    log.inject_failure(Some(std::io::ErrorKind::Other));
    log.append(b"lost");
    assert!(log.close().is_err());
    drop(log);
    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    assert!(!recovery.clean_shutdown);
}

#[test]
fn a_snapshot_replaces_older_segments_and_recovery_replays_after_it() {
    let temp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..120).map(payload).collect();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    append_all(&log, &payloads[..100]);
    let segments_before = segment_files(temp.path()).len();

    let mut snapshot = log.snapshot().unwrap();
    assert!(matches!(log.snapshot(), Err(LogError::SnapshotInProgress)));
    snapshot.push(b"state one").unwrap();
    snapshot.push(b"").unwrap();
    snapshot.push(b"state three").unwrap();
    snapshot.finish(60).unwrap();
    append_all(&log, &payloads[100..]);
    let status = log.status();
    assert!(status.snapshot_bytes > 0 && status.disk_bytes > status.snapshot_bytes);

    let remaining = segment_files(temp.path());
    assert!(remaining.len() < segments_before, "{} segments, {segments_before} before", remaining.len());
    assert!(first_lsn_of(&remaining[0]) <= 60 && first_lsn_of(&remaining[1]) > 60, "{remaining:?}");
    log.close().unwrap();
    drop(log);

    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::Everysec)).unwrap();
    assert_eq!((recovery.snapshot_records, recovery.replay_from, recovery.last_lsn), (3, 60, 120));
    let mut expected: Contents = vec![(None, b"state one".to_vec()), (None, vec![]), (None, b"state three".to_vec())];
    expected.extend(logged(60, &payloads[59..]));
    assert_eq!(contents(recovery), expected);
    assert_eq!(log.append(b"next"), 121);
}

#[test]
fn an_unfinished_snapshot_leaves_the_previous_state_intact() {
    let temp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..40).map(payload).collect();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &payloads[..20]);
    let mut snapshot = log.snapshot().unwrap();
    snapshot.push(b"old state").unwrap();
    snapshot.finish(10).unwrap();
    append_all(&log, &payloads[20..]);

    let mut abandoned = log.snapshot().unwrap();
    abandoned.push(b"half").unwrap();
    drop(abandoned);
    drop(log);
    // A crash while writing a snapshot leaves the temp file behind, with whatever reached it.
    fs::write(temp.path().join("snapshot.snap.tmp"), b"garbage").unwrap();

    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    let mut expected: Contents = vec![(None, b"old state".to_vec())];
    expected.extend(logged(10, &payloads[9..]));
    assert_eq!(contents(recovery), expected);
    assert!(!temp.path().join("snapshot.snap.tmp").exists());
}

#[test]
fn a_corrupt_snapshot_is_refused_naming_the_file() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &[b"a".to_vec(), b"b".to_vec()]);
    let mut snapshot = log.snapshot().unwrap();
    snapshot.push(b"the state").unwrap();
    snapshot.finish(2).unwrap();
    log.close().unwrap();
    drop(log);
    let path = temp.path().join("snapshot.snap");
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x10;
    fs::write(&path, bytes).unwrap();
    let error = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap_err();
    assert!(matches!(error, LogError::CorruptSnapshot { offset: 16, .. }), "{error}");
    assert!(error.to_string().contains("snapshot.snap"), "{error}");
}

#[test]
fn a_missing_segment_is_a_gap_and_refused() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    append_all(&log, &(0..100).map(payload).collect::<Vec<_>>());
    log.close().unwrap();
    drop(log);
    let segments = segment_files(temp.path());
    fs::remove_file(&segments[2]).unwrap();
    let error = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap_err();
    let LogError::Corrupt(corruption) = &error else { panic!("{error}") };
    assert_eq!((&corruption.file, corruption.offset), (&segments[3], 0));
    assert!(error.to_string().contains("--journal-repair"), "{error}");
}

/// Writes `payloads` to a fresh journal, as a crashed process leaves it (no close).
fn crashed_journal(payloads: &[Vec<u8>], segment_bytes: u64) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = Log::open(temp.path(), LogOptions { segment_bytes, ..options(FsyncPolicy::No) }).unwrap();
    append_all(&log, payloads);
    drop(log);
    temp
}

#[test]
fn damage_in_the_last_segment_followed_by_records_is_refused_unless_the_os_restarted() {
    let payloads: Vec<Vec<u8>> = (0..10).map(payload).collect();
    let journal = crashed_journal(&payloads, 1 << 20);
    let segment = segment_files(journal.path()).pop().unwrap();
    let starts = record_starts(&segment);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[starts[4] as usize + 18] ^= 0x01;
    fs::write(&segment, bytes).unwrap();

    let same_boot = tempfile::tempdir().unwrap();
    copy_dir(journal.path(), same_boot.path());
    let error = Log::open(same_boot.path(), options(FsyncPolicy::No)).unwrap_err();
    let LogError::Corrupt(corruption) = &error else { panic!("{error}") };
    assert_eq!((corruption.offset, corruption.first_lost_lsn), (starts[4], 5));

    // After an OS crash, unsynced pages may land out of order: a torn tail.
    let rebooted = LogOptions { boot_id: "boot-two".into(), ..options(FsyncPolicy::No) };
    let (_log, recovery) = Log::open(journal.path(), rebooted).unwrap();
    assert!(recovery.boot_id_changed);
    assert_eq!(recovery.truncated_tail.as_ref().map(|t| t.offset), Some(starts[4]));
    assert_eq!(contents(recovery), logged(1, &payloads[..4]));
}

fn payloads_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..30)
}

#[test]
fn a_segment_of_format_1_is_read_and_appends_go_on_in_format_2() {
    let temp = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..5).map(payload).collect();
    let header = frame::SegmentHeader { first_lsn: 1, boot_id: BOOT.into(), version: 1 };
    let mut bytes = frame::encode_segment_header(&header);
    for (lsn, payload) in (1..).zip(&payloads) {
        frame::encode_record(&mut bytes, lsn, payload);
    }
    fs::write(temp.path().join(format!("journal-{:020}.seg", 1)), bytes).unwrap();

    let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    assert_eq!(contents(recovery), logged(1, &payloads));
    let next = log.append(b"after");
    assert_eq!(next, 6);
    block_on(log.released(next, Gather::WithOthers)).unwrap();
    log.close().unwrap();
    drop(log);
    let newest = segment_files(temp.path()).pop().unwrap();
    let (header, _) = frame::read_segment_header(&mut fs::read(&newest).unwrap().as_slice()).unwrap().unwrap();
    assert_eq!(header.version, frame::SEGMENT_VERSION);
    let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
    let mut expected = logged(1, &payloads);
    expected.push((Some(6), b"after".to_vec()));
    assert_eq!(contents(recovery), expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_tail_cut_at_any_byte_of_the_last_record_loses_only_that_record(payloads in payloads_strategy()) {
        let journal = crashed_journal(&payloads, 1 << 20);
        let segment = segment_files(journal.path()).pop().unwrap();
        let starts = record_starts(&segment);
        let (last_start, end) = (starts[starts.len() - 2], starts[starts.len() - 1]);
        let bytes = fs::read(&segment).unwrap();
        for cut in last_start..end {
            let temp = tempfile::tempdir().unwrap();
            copy_dir(journal.path(), temp.path());
            fs::write(temp.path().join(segment.file_name().unwrap()), &bytes[..cut as usize]).unwrap();
            let (log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
            let kept = &payloads[..payloads.len() - 1];
            let torn = recovery.truncated_tail.clone();
            prop_assert_eq!(torn.map(|t| (t.offset, t.bytes_dropped)), (cut > last_start).then_some((last_start, cut - last_start)));
            prop_assert_eq!(contents(recovery), logged(1, kept));
            let next = log.append(b"after");
            prop_assert_eq!(next, payloads.len() as Lsn);
            block_on(log.released(next, Gather::WithOthers)).unwrap();
            log.close().unwrap();
            drop(log);
            let (_log, recovery) = Log::open(temp.path(), options(FsyncPolicy::No)).unwrap();
            let mut expected = logged(1, kept);
            expected.push((Some(next), b"after".to_vec()));
            prop_assert_eq!(contents(recovery), expected);
        }
    }

    /// Records appended together are written together, in one record of several entries: a tear
    /// anywhere in it loses all of them (none was released, since the write did not finish) and
    /// nothing before it.
    #[test]
    fn a_torn_tail_loses_every_entry_of_the_last_record_and_only_those(
        groups in prop::collection::vec(payloads_strategy(), 1..5),
        cut_pick in any::<prop::sample::Index>(),
    ) {
        let journal = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(journal.path(), LogOptions { segment_bytes: 1 << 20, ..options(FsyncPolicy::No) }).unwrap();
        for group in &groups {
            let last = group.iter().map(|payload| log.append(payload)).last().unwrap();
            block_on(log.released(last, Gather::WithOthers)).unwrap();
        }
        drop(log);
        let all = groups.concat();
        let segment = segment_files(journal.path()).pop().unwrap();
        let starts = record_starts(&segment);
        let entries = entries_per_record(&segment);
        prop_assert_eq!(entries.iter().sum::<u64>(), all.len() as u64);
        let (last_start, end) = (starts[starts.len() - 2], starts[starts.len() - 1]);
        let cut = last_start + cut_pick.index((end - last_start) as usize) as u64;
        let mut bytes = fs::read(&segment).unwrap();
        bytes.truncate(cut as usize);
        fs::write(&segment, bytes).unwrap();

        let (_log, recovery) = Log::open(journal.path(), options(FsyncPolicy::No)).unwrap();
        let kept = all.len() - *entries.last().unwrap() as usize;
        let torn = recovery.truncated_tail.clone();
        prop_assert_eq!(torn.map(|t| t.offset), (cut > last_start).then_some(last_start));
        prop_assert_eq!(contents(recovery), logged(1, &all[..kept]));
    }

    #[test]
    fn a_flipped_bit_in_an_earlier_segment_is_refused_and_repair_cuts_there(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 20..40),
        segment_pick in any::<prop::sample::Index>(),
        byte_pick in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let journal = crashed_journal(&payloads, 128);
        let segments = segment_files(journal.path());
        prop_assume!(segments.len() >= 2);
        let segment = &segments[segment_pick.index(segments.len() - 1)];
        let starts = record_starts(segment);
        let header_len = starts[0];
        let file_len = fs::metadata(segment).unwrap().len();
        let flip_at = byte_pick.index(file_len as usize) as u64;
        let mut bytes = fs::read(segment).unwrap();
        bytes[flip_at as usize] ^= 1 << bit;
        fs::write(segment, &bytes).unwrap();

        let damaged_at = if flip_at < header_len { 0 } else { *starts.iter().rev().find(|&&s| s <= flip_at).unwrap() };
        let first_lsn = first_lsn_of(segment);
        let records_before = if flip_at < header_len { 0 } else { starts.iter().position(|&s| s == damaged_at).unwrap() };
        let kept = (first_lsn - 1) as usize + records_before;

        let error = Log::open(journal.path(), options(FsyncPolicy::No)).unwrap_err();
        let LogError::Corrupt(corruption) = &error else { panic!("{error}") };
        prop_assert_eq!((&corruption.file, corruption.offset), (segment, damaged_at));
        prop_assert_eq!(corruption.first_lost_lsn, kept as Lsn + 1);
        let message = error.to_string();
        prop_assert!(message.contains(&segment.display().to_string()) && message.contains("--journal-repair"));

        let repair = LogOptions { repair: true, ..options(FsyncPolicy::No) };
        let (log, recovery) = Log::open(journal.path(), repair).unwrap();
        prop_assert_eq!(recovery.repaired.clone(), Some(corruption.clone()));
        prop_assert_eq!(contents(recovery), logged(1, &payloads[..kept]));
        prop_assert_eq!(log.append(b"after"), kept as Lsn + 1);
        block_on(log.released(kept as Lsn + 1, Gather::WithOthers)).unwrap();
        log.close().unwrap();
        drop(log);
        let (_log, recovery) = Log::open(journal.path(), options(FsyncPolicy::No)).unwrap();
        prop_assert!(recovery.clean_shutdown);
        prop_assert_eq!(recovery.last_lsn, kept as Lsn + 1);
    }
}

/// Not a test: measures records/s with 50 concurrent appenders, each waiting for its record's
/// release before appending the next, under each policy. Run by hand:
/// `cargo test --release --lib journal::tests::throughput -- --ignored --nocapture`
/// (JOURNAL_BENCH_DIR picks the file system, JOURNAL_BENCH_POLICY one policy: always, everysec, no).
#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    const CLIENTS: usize = 50;
    const RUN: Duration = Duration::from_secs(5);
    let root = std::env::var_os("JOURNAL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let only = std::env::var("JOURNAL_BENCH_POLICY").ok();
    let policies = [FsyncPolicy::No, FsyncPolicy::Everysec, FsyncPolicy::Always];
    for policy in policies.into_iter().filter(|p| only.as_deref().is_none_or(|only| only == p.as_str())) {
        let temp = tempfile::tempdir_in(&root).unwrap();
        let options = LogOptions { segment_bytes: 64 << 20, ..options(policy) };
        let (log, _) = Log::open(temp.path(), options).unwrap();
        let log = Arc::new(log);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let started = Instant::now();
        let records: usize = runtime.block_on(async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let payload = [7u8; 100];
                        let mut count = 0;
                        while started.elapsed() < RUN {
                            let lsn = log.append(&payload);
                            log.released(lsn, Gather::WithOthers).await.unwrap();
                            count += 1;
                        }
                        count
                    })
                })
                .collect();
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            total
        });
        let elapsed = started.elapsed().as_secs_f64();
        let status = log.status();
        println!(
            "{:>8}: {:>9.0} records/s, {} fsyncs, fsync mean {:.2} ms max {:.2} ms",
            policy.as_str(),
            records as f64 / elapsed,
            status.fsyncs,
            status.fsync_total.as_secs_f64() * 1000.0 / status.fsyncs.max(1) as f64,
            status.fsync_max.as_secs_f64() * 1000.0
        );
    }
}

/// What recording costs the lock core: TRY+UNLOCK cycles on one thread, no network, with the
/// journal attached (everysec) and without, alternating. Prints the median of each and their
/// ratio. Run by hand:
/// `cargo test --release --lib journal::tests::recording_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn recording_cost() {
    use crate::core::{ChangeSink, Clock, CoreSettings, IfHeld, LockCore, LockRequest, TryOutcome, Verdict};

    const KEYS: usize = 1_000;
    const CYCLES: usize = 200_000;
    const ROUNDS: usize = 15;
    let clock = Clock::new();
    let temp = tempfile::tempdir().unwrap();
    let options = JournalOptions {
        dir: temp.path().into(),
        fsync: FsyncPolicy::Everysec,
        repair: false,
        boot_id: BOOT.into(),
        segment_bytes: 1 << 30,
        rewrite_min_bytes: u64::MAX,
        rewrite_percentage: 0,
        max_lease_ms: 60_000,
        wall_offset_ms: 0,
    };
    let (journal, _) = Journal::open(options, &clock).unwrap();
    let journal = Arc::new(journal);
    let settings = CoreSettings {
        default_lease_ms: 10_000,
        max_lease_ms: 60_000,
        release_on_disconnect: true,
        shards: 8,
        max_queue_bytes: MAX_QUEUE_BYTES,
    };
    let core = LockCore::new(settings, 1);
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|k| format!("key:{k:08}").into_bytes()).collect();
    let owner = b"w17";
    let run = || {
        let started = Instant::now();
        for cycle in 0..CYCLES {
            let key = &keys[cycle % KEYS];
            let request = LockRequest { key, owner, lease_ms: None, conn: std::num::NonZeroU64::MIN };
            let TryOutcome::Acquired { token } = core.try_lock(request, IfHeld::Queue, clock.now()) else {
                panic!("not acquired")
            };
            core.unlock(key, owner, token, Verdict::Success { result: None, keep_ms: None }, clock.now());
        }
        started.elapsed().as_nanos() as f64 / CYCLES as f64
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        core.attach_sink(Arc::clone(&journal) as Arc<dyn ChangeSink>);
        with.push(run());
        core.detach_sink();
        without.push(run());
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (with, without) = (median(&mut with), median(&mut without));
    println!("ns per TRY+UNLOCK cycle: journal {with:.0}, none {without:.0}, recording adds {:.0}", with - without);
}
