//! W6 and S3: RSS growth per held lock, at one count (W6) or at several, taken one after the
//! other on one server (S3: does a lock cost the same at 10 k and at 5 M?).

use std::time::Duration;

use baton_testkit::process::rss_kb;

use crate::Res;
use crate::cli::{Common, Takers};
use crate::fill::Filler;
use crate::report::{Better, emit, note, thousands};
use crate::stats::now_ns;

/// W6: RSS growth per lock once `keys` locks are held.
pub async fn memory(common: &Common, pid: u32, keys: usize, takers: Takers) -> Res<()> {
    let workload = format!(
        "W6 memory, {} held locks (baton: LOCK.TRY k o PX 3600000; Redis: SET k o NX PX 3600000)",
        thousands(keys as f64)
    );
    per_lock(common, pid, &[keys], takers, |_| ("w6.lock".to_owned(), workload.clone())).await
}

/// S3: RSS growth per lock, over the same baseline, at each of `levels` held locks.
pub async fn memory_scale(common: &Common, pid: u32, levels: &[usize], takers: Takers) -> Res<()> {
    per_lock(common, pid, levels, takers, |level| {
        (format!("s3.n{level}.lock"), format!("S3 memory at {} held locks", thousands(level as f64)))
    })
    .await
}

/// Takes locks up to each level in turn and reports the RSS growth per lock since before the
/// first; `label(level)` names the figure (id, workload).
async fn per_lock(
    common: &Common,
    pid: u32,
    levels: &[usize],
    takers: Takers,
    label: impl Fn(usize) -> (String, String),
) -> Res<()> {
    let target = common.target;
    let mut filler = Filler::open(common, takers.connections, takers.batch).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid)?;
    for &level in levels {
        let started = now_ns();
        filler.hold_locks(target, level).await?;
        let elapsed = (now_ns() - started) as f64 / 1e9;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kb(pid)?;
        let per_lock = (after.saturating_sub(before) * 1024) as f64 / level.max(1) as f64;
        note(format!(
            "{target}: {level} held locks ({elapsed:.1} s); RSS {before} kB → {after} kB ({per_lock:.0} B per lock)"
        ));
        let (id, workload) = label(level);
        emit(&id, target, per_lock, Better::Lower, &workload, "RSS growth per held lock (B)");
    }
    Ok(())
}
