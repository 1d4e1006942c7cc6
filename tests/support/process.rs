//! The baton binary, and other programs, as child processes: for tests that need a real process
//! to signal, kill or measure. Shared by tests/faults.rs and tests/garbage.rs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

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

/// The baton binary on a loopback port of its own choosing (read from its log); its log lines
/// are kept.
pub struct Baton {
    pub proc: Proc,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Baton {
    /// Starts `baton --bind 127.0.0.1 --port 0 <args>` with `RUST_LOG=<rust_log>`.
    pub fn start(args: &[&str], rust_log: &str) -> Baton {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the baton binary");
        let stderr = child.stderr.take().expect("stderr");
        let proc = Proc { child };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready to accept connections")
                    && let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().expect("address in the log"));
                }
                lines.lock().expect("log").push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("baton did not report its address; log: {:?}", log.lock().expect("log")));
        Baton { proc, addr, log }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Resident memory of the server process, from /proc.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}
