//! CPU time the server has used: INFO's `# CPU` section in Redis's field names, which monitoring
//! tools graph (redis_exporter, Datadog), and Prometheus's `process_cpu_seconds_total`.
//!
//! From getrusage(2), as Redis's: it counts every thread, those that have exited too (the
//! fan-out's scoped thread), to the microsecond.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuTimes {
    user: Duration,
    system: Duration,
}

fn used_by(who: UsageWho) -> CpuTimes {
    // getrusage fails only for an unknown `who`, and these two are known everywhere.
    getrusage(who)
        .map(|usage| CpuTimes { user: duration(usage.user_time()), system: duration(usage.system_time()) })
        .unwrap_or_default()
}

fn duration(time: TimeVal) -> Duration {
    let seconds = u64::try_from(time.tv_sec()).unwrap_or(0);
    let micros = u32::try_from(time.tv_usec()).unwrap_or(0);
    Duration::new(seconds, 0) + Duration::from_micros(micros.into())
}

/// Seconds with six decimals, as Redis prints them.
fn seconds(time: Duration) -> String {
    format!("{}.{:06}", time.as_secs(), time.subsec_micros())
}

/// INFO's `# CPU` fields. baton starts no child processes, so their fields stay 0; they are
/// there because tools read them.
pub(crate) fn info_fields() -> Vec<(&'static str, String)> {
    let (own, children) = (used_by(UsageWho::RUSAGE_SELF), used_by(UsageWho::RUSAGE_CHILDREN));
    vec![
        ("used_cpu_sys", seconds(own.system)),
        ("used_cpu_user", seconds(own.user)),
        ("used_cpu_sys_children", seconds(children.system)),
        ("used_cpu_user_children", seconds(children.user)),
    ]
}

/// User and system CPU seconds the process has used, for Prometheus.
pub(crate) fn process_seconds() -> f64 {
    let own = used_by(UsageWho::RUSAGE_SELF);
    (own.user + own.system).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_printed_as_redis_prints_them() {
        assert_eq!(seconds(Duration::from_micros(12_000_340)), "12.000340");
        assert_eq!(seconds(Duration::ZERO), "0.000000");
        assert_eq!(duration(TimeVal::new(3, 250_000)), Duration::from_millis(3_250));
    }
}
