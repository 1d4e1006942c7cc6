//! State to measure against: connections that take many locks (or places in a line) with
//! pipelined requests and keep them while they stay open (baton releases a connection's locks and
//! places when it closes). W6 and the scale workloads S1–S3 build their state with it.

use baton_testkit::Resp;
use baton_testkit::client::Connection;
use futures_util::future::try_join_all;

use crate::Res;
use crate::cli::{Common, Target};
use crate::client::{expect_ok, open_many, token_of};

/// A lease that outlasts any run: nothing taken for a workload runs out while it measures.
pub const HOUR_MS: &[u8] = b"3600000";

pub struct Filler {
    conns: Vec<Connection>,
    /// Requests sent so far; the next one is number `sent`.
    sent: usize,
    /// Requests per pipelined write.
    batch: usize,
}

impl Filler {
    pub async fn open(common: &Common, connections: usize, batch: usize) -> Res<Filler> {
        Ok(Filler { conns: open_many(common, connections.max(1)).await?, sent: 0, batch: batch.max(1) })
    }

    /// Sends requests `sent..upto`, spread evenly over the connections, `batch` per write;
    /// `request(n, conn)` queues request number n, and `check` vets every reply.
    pub async fn grow_to(
        &mut self,
        upto: usize,
        request: impl Fn(usize, &mut Connection),
        check: impl Fn(&Resp) -> Res<()>,
    ) -> Res<()> {
        let from = self.sent;
        let per_conn = upto.saturating_sub(from).div_ceil(self.conns.len());
        let (batch, request, check) = (self.batch, &request, &check);
        try_join_all(self.conns.iter_mut().enumerate().map(|(index, conn)| async move {
            let mut next = from + index * per_conn;
            let end = (next + per_conn).min(upto);
            while next < end {
                let until = (next + batch).min(end);
                for number in next..until {
                    request(number, conn);
                }
                conn.flush().await?;
                for _ in next..until {
                    check(&conn.read().await?)?;
                }
                next = until;
            }
            Res::Ok(())
        }))
        .await?;
        self.sent = self.sent.max(upto);
        Ok(())
    }

    /// Holds locks `mem:<n>` for n below `upto` (baton: LOCK.TRY k o PX 3600000; Redis: SET k o NX
    /// PX 3600000).
    pub async fn hold_locks(&mut self, target: Target, upto: usize) -> Res<()> {
        let request = |number: usize, conn: &mut Connection| {
            let key = format!("mem:{number}");
            match target {
                Target::Baton => conn.queue(&[b"LOCK.TRY", key.as_bytes(), b"o", b"PX", HOUR_MS]),
                Target::Redis => conn.queue(&[b"SET", key.as_bytes(), b"o", b"NX", b"PX", HOUR_MS]),
            }
        };
        let check = |reply: &Resp| match target {
            Target::Baton => token_of(reply).map(drop),
            Target::Redis => expect_ok(reply, "SET NX"),
        };
        self.grow_to(upto, request, check).await
    }
}
