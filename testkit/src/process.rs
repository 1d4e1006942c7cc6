//! Child processes for tests that need a real process to signal, kill or measure.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A child process that is killed (SIGKILL) and reaped when dropped, so no test leaves one
/// behind however it ends.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name such as `TERM`, `STOP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server child that picks its own port and says which in a log line on stderr; every log line
/// is kept for the test to inspect.
pub struct ServerProcess {
    pub proc: Proc,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The server's data directory when it is this process's alone; removed after the process
    /// is killed (fields drop in order).
    scratch: Option<crate::scratch::ScratchDir>,
}

impl ServerProcess {
    /// Spawns `command` (stdin and stdout null, stderr read here) and waits up to 20 s for a log
    /// line from which `listening_addr` reads the address.
    pub fn start(command: &mut Command, listening_addr: fn(&str) -> Option<SocketAddr>) -> ServerProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        let stderr = child.stderr.take().expect("stderr");
        let proc = Proc { child };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = listening_addr(&line);
                // Kept before the address is reported, so the log a caller reads once it has
                // the address already holds the line that gave it.
                lines.lock().expect("log").push(line);
                if let Some(addr) = addr {
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{command:?} did not report its address; log: {:?}", log.lock().expect("log")));
        ServerProcess { proc, addr, log, scratch: None }
    }

    /// Removes `dir` once this process is gone.
    pub fn owning(mut self, dir: crate::scratch::ScratchDir) -> ServerProcess {
        self.scratch = Some(dir);
        self
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Resident memory of the server process.
    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.proc.pid()).expect("VmRSS of the server")
    }
}

/// Resident memory (VmRSS) of process `pid`, from /proc.
pub fn rss_kb(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS in /proc/{pid}/status")))
}

/// CPU time (user + system) process `pid` has used, in seconds: [`cpu_nanos`].
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    Ok(cpu_nanos(pid)? as f64 / 1e9)
}

/// CPU time process `pid` has used, in nanoseconds: its POSIX CPU-time clock, which counts every
/// thread it ran, those that have exited too (a fan-out's scoped thread), to the nanosecond.
/// The sum of the live threads' /proc schedstat, used before, missed exited threads, and
/// /proc/PID/stat counts in ticks of 10 ms, too coarse for a window of tens of milliseconds.
pub fn cpu_nanos(pid: u32) -> io::Result<u64> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("no pid {pid}")))?;
    let clock = nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid))?;
    let spent = nix::time::clock_gettime(clock)?;
    Ok(u64::try_from(spent.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(spent.tv_nsec()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_resident_memory() {
        assert!(rss_kb(std::process::id()).expect("VmRSS") > 0);
        assert!(rss_kb(u32::MAX).is_err());
    }

    #[test]
    fn reads_the_cpu_time_it_spends() {
        let before = cpu_seconds(std::process::id()).expect("cpu clock");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = cpu_seconds(std::process::id()).expect("cpu clock") - before;
        assert!(spent > 0.05, "200 ms of spinning counted as {spent} s");
        assert!(cpu_seconds(u32::MAX).is_err());
    }

    #[test]
    fn counts_the_cpu_time_of_threads_that_have_exited() {
        let before = cpu_nanos(std::process::id()).expect("cpu clock");
        std::thread::spawn(|| {
            let own = || std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            let own_ns = || own().split_whitespace().next().unwrap().parse::<u64>().unwrap();
            let start = own_ns();
            let mut x = 0u64;
            while own_ns() - start < 50_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .unwrap();
        let spent = cpu_nanos(std::process::id()).expect("cpu clock") - before;
        assert!(spent >= 50_000_000, "an exited thread's 50 ms on the CPU counted as {spent} ns");
        assert!(cpu_nanos(u32::MAX).is_err());
    }

    #[test]
    fn a_server_child_reports_its_address_and_is_killed_on_drop() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo starting >&2; echo 'ready addr=127.0.0.1:4321' >&2; exec sleep 60"]);
        let mut server = ServerProcess::start(&mut command, |line| line.strip_prefix("ready addr=")?.parse().ok());
        assert_eq!(server.addr, "127.0.0.1:4321".parse().unwrap());
        assert!(server.alive());
        assert!(server.log_text().starts_with("starting\n"));
        let pid = server.proc.pid();
        drop(server);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the child was reaped");
    }
}
