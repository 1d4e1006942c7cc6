//! W5: a contended mix, clients over few keys, 20% FAILURE: completed operations per second,
//! waits, and (baton) the FIFO check of `fifo`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton_testkit::client::Connection;
use baton_testkit::{Resp, Rng};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{self, UNLOCK_LUA, expect_int, load_script, token_of};
use crate::fifo::{Answer, QueueSnapshot, WaitRecord, fifo_against_snapshots, resolve_epochs, send_order_inversions};
use crate::report::{Better, emit, note};
use crate::stats::{new_hist, now_ns, quantile_us, secs_ns};
use crate::{Res, fail, join_all};

#[derive(Clone, Copy)]
pub struct ContendedSettings {
    pub clients: usize,
    pub keys: usize,
    pub duration: f64,
    pub warmup: f64,
    pub wait_timeout_ms: u64,
    pub failure_pct: u64,
}

#[derive(Default)]
struct ContendedOut {
    ops: u64,
    acquired: u64,
    done: u64,
    timeouts: u64,
    max_wait: u64,
    hist: Option<Histogram<u64>>,
    records: Vec<WaitRecord>,
    /// owner id → token it was granted.
    grants: Vec<(u64, u64)>,
}

fn owner_id(client: usize, attempt: u64) -> u64 {
    ((client as u64) << 40) | attempt
}

fn owner_name(id: u64) -> String {
    format!("c{}.{}", id >> 40, id & ((1 << 40) - 1))
}

fn parse_owner(name: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(name).ok()?.strip_prefix('c')?;
    let (client, attempt) = text.split_once('.')?;
    Some(owner_id(client.parse().ok()?, attempt.parse().ok()?))
}

pub async fn contended(common: &Common, settings: ContendedSettings) -> Res<()> {
    let target = common.target;
    let sha = match target {
        Target::Redis => Some(load_script(&mut client::open(common).await?, UNLOCK_LUA).await?),
        Target::Baton => None,
    };
    let mut clients = Vec::new();
    for client in 0..settings.clients {
        let cmd = client::open(common).await?;
        let sub = match target {
            Target::Baton => None,
            Target::Redis => {
                let mut sub = client::open(common).await?;
                let channel = format!("contended:{}:released", client % settings.keys);
                sub.call(&[b"SUBSCRIBE", channel.as_bytes()]).await?;
                Some(sub)
            }
        };
        clients.push((cmd, sub));
    }
    let start = now_ns();
    let measure_from = start + secs_ns(settings.warmup);
    let end = measure_from + secs_ns(settings.duration);
    let observer = tokio::spawn(observe_queues(client::open(common).await?, target, settings.keys, end));
    let mut set = JoinSet::new();
    for (client, (cmd, sub)) in clients.into_iter().enumerate() {
        let run =
            ContendedClient { client, settings, measure_from, end, cmd, sub, sha: sha.clone().unwrap_or_default() };
        set.spawn(run.run());
    }
    let outs = join_all(set).await?;
    let snapshots = observer.await??;
    let mut hist = new_hist();
    let (mut ops, mut acquired, mut done, mut timeouts, mut max_wait) = (0, 0, 0, 0, 0);
    let mut records = Vec::new();
    let mut grants = HashMap::new();
    for out in outs {
        ops += out.ops;
        acquired += out.acquired;
        done += out.done;
        timeouts += out.timeouts;
        max_wait = max_wait.max(out.max_wait);
        if let Some(part) = &out.hist {
            hist.add(part)?;
        }
        records.extend(out.records);
        grants.extend(out.grants);
    }
    let seconds = (end - measure_from) as f64 / 1e9;
    let workload = format!(
        "W5 contended, {} clients over {} keys, {}% FAILURE",
        settings.clients, settings.keys, settings.failure_pct
    );
    note(format!("{target} contended: {ops} ops ({acquired} acquired, {done} DONE), {timeouts} timeouts"));
    emit("w5.rate", target, ops as f64 / seconds, Better::Higher, &workload, "completed operations/s");
    emit("w5.wait.p50", target, quantile_us(&hist, 0.5), Better::Lower, &workload, "wait p50 (µs)");
    emit("w5.wait.p99", target, quantile_us(&hist, 0.99), Better::Lower, &workload, "wait p99 (µs)");
    emit("w5.wait.max", target, max_wait as f64 / 1e6, Better::Lower, &workload, "max wait (ms)");
    emit(
        "w5.done",
        target,
        done as f64 / (acquired + done).max(1) as f64 * 100.0,
        Better::None,
        &workload,
        "answered DONE (%)",
    );
    emit("w5.timeouts", target, timeouts as f64, Better::Lower, &workload, "waits timed out");
    if target == Target::Baton {
        let epochs = resolve_epochs(&records, &grants);
        let (violations, checked) = fifo_against_snapshots(&epochs, &snapshots);
        let (strict, spaced) = send_order_inversions(&epochs);
        note(format!(
            "FIFO: {violations} violations over {checked} queue snapshots ({} answered waits); answered out of \
             client send order: {strict} (any gap), {spaced} (sends ≥ 1 ms apart)",
            epochs.len()
        ));
        emit(
            "w5.fifo",
            target,
            violations as f64,
            Better::Lower,
            &workload,
            "FIFO violations (vs LOCK.INFO queue order)",
        );
        emit(
            "w5.fifo.send1ms",
            target,
            spaced as f64,
            Better::None,
            &workload,
            "answered out of client send order, sends ≥ 1 ms apart",
        );
    }
    Ok(())
}

/// Every 5 ms, reads every key's queue with LOCK.INFO (baton) until `end`. Against Redis it sends
/// the same number of GETs, so both servers carry the same observer load.
async fn observe_queues(mut conn: Connection, target: Target, keys: usize, end: u64) -> Res<Vec<QueueSnapshot>> {
    let names: Vec<String> = (0..keys).map(|key| format!("contended:{key}")).collect();
    let mut snapshots = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while now_ns() < end {
        tick.tick().await;
        for name in &names {
            match target {
                Target::Baton => conn.queue(&[b"LOCK.INFO", name.as_bytes()]),
                Target::Redis => conn.queue(&[b"GET", name.as_bytes()]),
            }
        }
        conn.flush().await?;
        for key in 0..keys {
            let reply = conn.read().await?;
            let at = now_ns();
            if target == Target::Redis {
                continue;
            }
            let Resp::Array(items) = &reply else {
                return fail(format!("LOCK.INFO answered {reply}"));
            };
            let queue = items
                .chunks(2)
                .find(|pair| pair.len() == 2 && pair[0].bulk_is("queue"))
                .map(|pair| match &pair[1] {
                    Resp::Array(owners) => owners
                        .iter()
                        .filter_map(|owner| match owner {
                            Resp::Bulk(name) => parse_owner(name),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default();
            if !queue.is_empty() {
                snapshots.push(QueueSnapshot { key: key as u32, at, queue });
            }
        }
    }
    Ok(snapshots)
}

struct ContendedClient {
    client: usize,
    settings: ContendedSettings,
    measure_from: u64,
    end: u64,
    cmd: Connection,
    sub: Option<Connection>,
    sha: Vec<u8>,
}

impl ContendedClient {
    async fn run(mut self) -> Res<ContendedOut> {
        let key_index = (self.client % self.settings.keys) as u32;
        let key = format!("contended:{key_index}");
        let channel = format!("{key}:released");
        let timeout = self.settings.wait_timeout_ms.to_string();
        // Spread seeds: neighbouring clients must not draw alike.
        let mut rng = Rng::new((self.client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut out = ContendedOut { hist: Some(new_hist()), ..ContendedOut::default() };
        let mut attempt = 0;
        loop {
            let sent_start = now_ns();
            if sent_start >= self.end {
                break;
            }
            attempt += 1;
            let id = owner_id(self.client, attempt);
            let owner = owner_name(id);
            let (answer, sent_end) = match &mut self.sub {
                None => {
                    self.cmd.queue(&[b"LOCK.WAIT", key.as_bytes(), owner.as_bytes(), timeout.as_bytes()]);
                    self.cmd.flush().await?;
                    let sent_end = now_ns();
                    let reply = self.cmd.read().await?;
                    (baton_answer(&reply)?, sent_end)
                }
                Some(sub) => {
                    let limit = Duration::from_millis(self.settings.wait_timeout_ms);
                    (redis_wait(&mut self.cmd, sub, key.as_bytes(), owner.as_bytes(), limit).await?, sent_start)
                }
            };
            let answered = now_ns();
            let waited = answered - sent_start;
            out.max_wait = out.max_wait.max(waited);
            let measured = sent_start >= self.measure_from;
            match answer {
                None => out.timeouts += 1,
                Some(Answer::Granted(token)) => {
                    let failure = rng.percent(self.settings.failure_pct);
                    let verdict: &[u8] = if failure { b"FAILURE" } else { b"SUCCESS" };
                    if self.sub.is_none() {
                        let token = token.to_string();
                        let reply = self
                            .cmd
                            .call(&[b"LOCK.UNLOCK", key.as_bytes(), owner.as_bytes(), token.as_bytes(), verdict])
                            .await?;
                        if !matches!(reply, Resp::Int(_)) {
                            return fail(format!("LOCK.UNLOCK answered {reply}"));
                        }
                        out.grants.push((id, token.parse()?));
                    } else {
                        let message = format!("{owner} {}", if failure { "F" } else { "S" });
                        let reply = self
                            .cmd
                            .call(&[
                                b"EVALSHA",
                                &self.sha,
                                b"1",
                                key.as_bytes(),
                                owner.as_bytes(),
                                channel.as_bytes(),
                                message.as_bytes(),
                            ])
                            .await?;
                        expect_int(&reply, 1, "unlock script")?;
                    }
                    if measured {
                        out.acquired += 1;
                    }
                }
                Some(Answer::DoneBy(_)) => {
                    if measured {
                        out.done += 1;
                    }
                }
            }
            if let Some(answer) = answer {
                if measured {
                    out.ops += 1;
                    if let Some(hist) = &mut out.hist {
                        hist.saturating_record(waited);
                    }
                }
                if self.sub.is_none() {
                    out.records.push(WaitRecord { key: key_index, owner: id, sent_start, sent_end, answer });
                }
            }
        }
        Ok(out)
    }
}

fn baton_answer(reply: &Resp) -> Res<Option<Answer>> {
    match reply {
        reply if reply.is_nil() => Ok(None),
        Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("ACQUIRED")) => {
            Ok(Some(Answer::Granted(token_of(reply)?)))
        }
        Resp::Array(items) if items.len() == 3 && items[0].bulk_is("DONE") => match &items[1] {
            Resp::Bulk(finisher) => match parse_owner(finisher) {
                Some(id) => Ok(Some(Answer::DoneBy(id))),
                None => fail(format!("DONE from an unknown finisher: {reply}")),
            },
            _ => fail(format!("bad DONE reply: {reply}")),
        },
        other => fail(format!("LOCK.WAIT answered {other}")),
    }
}

/// The Redis recipe's "wait": SET NX (GET tells who holds it); if held, wait on the key's channel
/// for that holder's release: "S" means it succeeded (DONE), "F" means retry. None on timeout.
async fn redis_wait(
    cmd: &mut Connection,
    sub: &mut Connection,
    key: &[u8],
    owner: &[u8],
    limit: Duration,
) -> Res<Option<Answer>> {
    let deadline = Instant::now() + limit;
    loop {
        let holder = match cmd.call(&[b"SET", key, owner, b"NX", b"GET", b"PX", b"30000"]).await? {
            reply if reply.is_nil() => return Ok(Some(Answer::Granted(0))),
            Resp::Bulk(holder) => holder,
            other => return fail(format!("SET NX GET answered {other}")),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = sub.read_within(left).await? else {
                return Ok(None);
            };
            let Resp::Array(items) = &message else {
                return fail(format!("subscriber got {message}"));
            };
            let Some(Resp::Bulk(payload)) = items.get(2) else {
                continue;
            };
            let Some(split) = payload.iter().rposition(|&b| b == b' ') else {
                continue;
            };
            if payload[..split] != holder[..] {
                continue;
            }
            if &payload[split + 1..] == b"S" {
                return Ok(Some(Answer::DoneBy(0)));
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_round_trip() {
        let id = owner_id(63, 123_456);
        assert_eq!(parse_owner(owner_name(id).as_bytes()), Some(id));
        assert_eq!(parse_owner(b"hw1"), None);
    }
}
