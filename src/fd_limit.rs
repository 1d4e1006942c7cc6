//! `--maxclients` against the process's open-files limit, as Redis's `adjustOpenFilesLimit` does:
//! raise the soft limit to fit every client plus a reserve, and where that is not allowed lower
//! maxclients with a warning. Otherwise the clients past the limit would not even be refused: the
//! accept fails for want of a descriptor and they wait in the backlog with no answer.

use std::io;

use tracing::{info, warn};

/// Descriptors kept for what is not a client: listeners, the runtime, stdio and a refused
/// client's brief connection (Redis keeps 32 as well).
pub(crate) const RESERVED_FDS: u64 = 32;

/// Raises the soft open-files limit for `maxclients` clients plus `reserved` descriptors, and
/// returns the maxclients that fits in the limit the process ends up with. Errs when no client at
/// all would fit.
pub(crate) fn fit_maxclients(maxclients: usize, reserved: u64) -> io::Result<usize> {
    let wanted = maxclients as u64 + reserved;
    let (soft, hard) = open_files_limit()?;
    if soft >= wanted {
        return Ok(maxclients);
    }
    let raised = wanted.min(hard);
    let soft = match set_open_files_limit(raised, hard) {
        Ok(()) => raised,
        Err(error) => {
            warn!(%error, wanted = raised, current = soft, "cannot raise the open files limit");
            soft
        }
    };
    let fitting = clients_fitting(maxclients, reserved, soft);
    if fitting == 0 {
        return Err(io::Error::other(format!(
            "the open files limit ({soft}) is not enough to start: raise 'ulimit -n' to at least {}",
            reserved + 1
        )));
    }
    if fitting < maxclients {
        warn!(
            open_files_limit = soft,
            requested = maxclients,
            maxclients = fitting,
            "maxclients reduced to fit the open files limit; raise 'ulimit -n' to serve more clients"
        );
    } else {
        info!(open_files_limit = soft, "raised the open files limit for --maxclients");
    }
    Ok(fitting)
}

fn clients_fitting(maxclients: usize, reserved: u64, soft_limit: u64) -> usize {
    usize::try_from(soft_limit.saturating_sub(reserved)).unwrap_or(usize::MAX).min(maxclients)
}

fn open_files_limit() -> io::Result<(u64, u64)> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

fn set_open_files_limit(soft: u64, hard: u64) -> io::Result<()> {
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxclients_shrinks_to_what_the_limit_leaves_after_the_reserve() {
        assert_eq!(clients_fitting(10_000, RESERVED_FDS, 1_024), 992);
        assert_eq!(clients_fitting(100, RESERVED_FDS, 1_024), 100);
        assert_eq!(clients_fitting(100, RESERVED_FDS, 32), 0);
        assert_eq!(clients_fitting(100, RESERVED_FDS, 0), 0);
    }

    #[test]
    fn a_limit_that_already_fits_is_left_alone() {
        let (soft, _) = open_files_limit().unwrap();
        let fits = usize::try_from(soft - RESERVED_FDS).unwrap().min(10);
        assert_eq!(fit_maxclients(fits, RESERVED_FDS).unwrap(), fits);
        assert_eq!(open_files_limit().unwrap().0, soft);
    }
}
