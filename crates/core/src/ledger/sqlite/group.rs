//! Group commit for the SQLite ledger's reserves and settlements.
//!
//! Each write transaction costs a `BEGIN IMMEDIATE`, a look at the budgets' version and a
//! `COMMIT` that appends every page it touched to the WAL: most of a reservation's time. When
//! several threads reserve or settle at once, the first one to find the ledger idle runs every
//! operation queued so far (up to [`MAX_GROUP`]) in one transaction, each inside its own
//! savepoint, and commits once; the others wait for their answer. An operation that fails rolls
//! back to its savepoint and fails alone; if the `COMMIT` fails, every operation of the group
//! fails with it and nothing of the group is written. Nobody is answered before the `COMMIT`, so
//! an answer is as durable as with one transaction per operation, and decisions are taken in
//! queue order against the figures the earlier ones left, exactly as if they ran one by one.
//! A lone operation runs as before: one transaction, no savepoint.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Transaction, TransactionBehavior};

use super::{Cache, SqliteLedger, storage_error};
use crate::budget::CallTags;
use crate::error::{Error, Result};
use crate::ledger::history::Tokens;
use crate::ledger::{Policy, Reservation, ReserveRequest, Settlement};
use crate::money::NanoUsd;

/// Most operations in one transaction: bounds how long the thread that runs a group (itself a
/// caller) waits for others' work.
const MAX_GROUP: usize = 128;

/// An operation that can share a transaction with others.
pub(super) enum Op {
    Reserve {
        call: CallTags,
        amount: NanoUsd,
        policy: Policy,
        ttl_ms: i64,
        id: Option<String>,
        now: i64,
    },
    End {
        id: String,
        actual: Option<NanoUsd>,
        now: i64,
    },
}

/// An operation's answer.
pub(super) enum Done {
    Reserve(Result<Reservation>),
    End(Result<Settlement>),
}

impl Op {
    fn failed(&self, e: Error) -> Done {
        match self {
            Self::Reserve { .. } => Done::Reserve(Err(e)),
            Self::End { .. } => Done::End(Err(e)),
        }
    }
}

impl Done {
    pub(super) fn into_reservation(self) -> Result<Reservation> {
        match self {
            Self::Reserve(r) => r,
            Self::End(_) => Err(mismatch()),
        }
    }

    pub(super) fn into_settlement(self) -> Result<Settlement> {
        match self {
            Self::End(r) => r,
            Self::Reserve(_) => Err(mismatch()),
        }
    }
}

fn mismatch() -> Error {
    Error::Storage {
        message: "internal error: the SQLite ledger answered an operation with another's result; please report this".to_owned(),
    }
}

struct Job {
    op: Op,
    out: Mutex<Option<Done>>,
}

/// The queue of operations waiting for a transaction.
#[derive(Default)]
pub(super) struct Group {
    queue: Mutex<Queue>,
    /// Signalled when a group has been answered (and the ledger is idle again).
    answered: Condvar,
    /// The largest group run so far, for the tests to see that groups form.
    #[cfg(test)]
    largest: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Arc<Job>>,
    running: bool,
}

/// Marks the ledger idle and wakes the waiters, also when the group's thread unwinds.
struct Idle<'a>(&'a Group);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.queue.lock().running = false;
        self.0.answered.notify_all();
    }
}

/// Answers every operation of a group that has no answer yet (only when unwinding from a bug),
/// so no caller waits forever.
struct AnswerAll<'a>(&'a [Arc<Job>]);

impl Drop for AnswerAll<'_> {
    fn drop(&mut self) {
        for job in self.0 {
            let mut out = job.out.lock();
            if out.is_none() {
                *out = Some(job.op.failed(Error::Storage {
                    message: "internal error: a SQLite ledger transaction was interrupted; nothing of it was written".to_owned(),
                }));
            }
        }
    }
}

impl SqliteLedger {
    /// Runs `op` in a transaction, shared with whatever other threads queued meanwhile.
    pub(super) fn grouped(&self, op: Op) -> Done {
        let job = Arc::new(Job {
            op,
            out: Mutex::new(None),
        });
        let mut queue = self.group.queue.lock();
        queue.jobs.push_back(Arc::clone(&job));
        loop {
            if let Some(done) = job.out.lock().take() {
                return done;
            }
            if queue.running {
                self.group.answered.wait(&mut queue);
                continue;
            }
            queue.running = true;
            let n = queue.jobs.len().min(MAX_GROUP);
            let jobs: Vec<Arc<Job>> = queue.jobs.drain(..n).collect();
            drop(queue);
            #[cfg(test)]
            self.group
                .largest
                .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
            {
                let _idle = Idle(&self.group);
                let _answer = AnswerAll(&jobs);
                self.run_group(&jobs);
            }
            // Usually this thread's own operation was in its group: no need to queue again.
            if let Some(done) = job.out.lock().take() {
                return done;
            }
            queue = self.group.queue.lock();
        }
    }

    fn run_group(&self, jobs: &[Arc<Job>]) {
        let answer = |job: &Job, done: Done| *job.out.lock() = Some(done);
        let fail_all = |e: &rusqlite::Error| {
            for job in jobs {
                answer(job, job.op.failed(storage_error(&self.path, e)));
            }
        };
        let mut guard = self.conn.lock();
        let (tx, mut cache) = match self.begin(&mut guard, TransactionBehavior::Immediate) {
            Ok(t) => t,
            Err(e) => {
                let message = e.to_string();
                for job in jobs {
                    answer(
                        job,
                        job.op.failed(Error::Storage {
                            message: message.clone(),
                        }),
                    );
                }
                return;
            }
        };
        if let [job] = jobs {
            match self.run_op(&tx, &mut cache, &job.op) {
                Ok(done) => match tx.commit() {
                    Ok(()) => answer(job, done),
                    Err(e) => fail_all(&e),
                },
                // Dropping the transaction rolls it back.
                Err(e) => answer(job, job.op.failed(e)),
            }
            return;
        }
        let mut outs: Vec<Result<Done>> = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.in_savepoint(&tx, &mut cache, &job.op) {
                Ok(out) => outs.push(out),
                Err(e) => return fail_all(&e),
            }
        }
        if let Err(e) = tx.commit() {
            // Keep each operation's own failure; the rest fail with the commit.
            for (job, out) in jobs.iter().zip(outs) {
                answer(
                    job,
                    job.op
                        .failed(out.err().unwrap_or_else(|| storage_error(&self.path, &e))),
                );
            }
            return;
        }
        for (job, out) in jobs.iter().zip(outs) {
            answer(job, out.unwrap_or_else(|e| job.op.failed(e)));
        }
    }

    /// Runs one operation of a group inside a savepoint, undone if it fails. The outer error is
    /// a failure of the savepoint statements themselves, which fails the whole group.
    fn in_savepoint(
        &self,
        tx: &Transaction<'_>,
        cache: &mut Cache<'_>,
        op: &Op,
    ) -> rusqlite::Result<Result<Done>> {
        let sql = |s: &str| {
            tx.prepare_cached(s)
                .and_then(|mut st| st.execute([]).map(drop))
        };
        sql("SAVEPOINT bursora_op")?;
        let out = self.run_op(tx, cache, op);
        if out.is_err() {
            sql("ROLLBACK TO bursora_op")?;
        }
        sql("RELEASE bursora_op")?;
        Ok(out)
    }

    /// One operation inside the current transaction; `Err` means undo what it wrote.
    fn run_op(&self, tx: &Transaction<'_>, cache: &mut Cache<'_>, op: &Op) -> Result<Done> {
        match op {
            Op::Reserve {
                call,
                amount,
                policy,
                ttl_ms,
                id,
                now,
            } => {
                let req = ReserveRequest {
                    call,
                    amount: *amount,
                    policy: *policy,
                    ttl_ms: Some(*ttl_ms),
                    id: id.as_deref(),
                };
                self.reserve_in(tx, cache, &req, *ttl_ms, *now)
                    .map(Done::Reserve)
            }
            Op::End { id, actual, now } => self
                .end_in(tx, id, *actual, *now, Tokens::default())
                .map(|s| Done::End(Ok(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetSpec, Mode, Selector, Tags};
    use crate::ledger::{Ledger, Outcome};
    use crate::window::Window;

    fn usd(n: i64) -> NanoUsd {
        NanoUsd::from_nanos(n).unwrap()
    }

    fn call(tenant: &str) -> CallTags {
        CallTags {
            tags: Tags::new([("tenant_id", tenant.to_owned())]).unwrap(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        }
    }

    fn reserve(tenant: &str, amount: i64, id: Option<&str>) -> Arc<Job> {
        job(Op::Reserve {
            call: call(tenant),
            amount: usd(amount),
            policy: Policy::Block,
            ttl_ms: 60_000,
            id: id.map(str::to_owned),
            now: 1_000,
        })
    }

    fn end(id: &str, actual: Option<i64>) -> Arc<Job> {
        job(Op::End {
            id: id.to_owned(),
            actual: actual.map(usd),
            now: 1_000,
        })
    }

    fn job(op: Op) -> Arc<Job> {
        Arc::new(Job {
            op,
            out: Mutex::new(None),
        })
    }

    fn take(job: &Job) -> Done {
        job.out
            .lock()
            .take()
            .expect("every operation of a group is answered")
    }

    /// One group mixing admitted, refused, replayed, failing and settling operations answers
    /// each as if they had run one after another, and commits all but the failed ones.
    #[test]
    fn a_mixed_group_answers_each_operation_as_if_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = SqliteLedger::open(dir.path().join("g.db")).unwrap();
        let spec = BudgetSpec::new(
            "per-tenant",
            Selector::new([("tenant_id", "*")]).unwrap(),
            usd(100),
            Window::Total,
            Mode::Block,
        )
        .unwrap();
        ledger.upsert_budget(&spec).unwrap();
        let jobs = vec![
            reserve("a", 60, Some("res-first-a")),
            reserve("a", 60, None), // does not fit after the first
            reserve("a", 60, Some("res-first-a")), // the same id: the first, replayed
            end("res-no-such-thing", Some(1)), // fails alone
            end("res-first-a", Some(25)), // settles the first: 35 back
            reserve("a", 60, Some("res-second-a")), // fits now: 25 spent + 60
            reserve("b", 100, None), // another tenant's own counter
        ];
        ledger.run_group(&jobs);
        let first = take(&jobs[0]).into_reservation().unwrap();
        assert_eq!(
            (first.id.as_str(), first.amount, first.replayed),
            ("res-first-a", usd(60), false)
        );
        assert!(matches!(
            take(&jobs[1]).into_reservation(),
            Err(Error::BudgetExceeded(_))
        ));
        let again = take(&jobs[2]).into_reservation().unwrap();
        assert_eq!((again.id.as_str(), again.replayed), ("res-first-a", true));
        assert!(matches!(
            take(&jobs[3]).into_settlement(),
            Err(Error::UnknownReservation { .. })
        ));
        let settled = take(&jobs[4]).into_settlement().unwrap();
        assert_eq!(
            (settled.actual, settled.refunded, settled.outcome),
            (usd(25), usd(35), Outcome::Settled)
        );
        assert!(take(&jobs[5]).into_reservation().is_ok());
        assert!(take(&jobs[6]).into_reservation().is_ok());

        // What the group committed, read back through a fresh connection.
        let reopened = SqliteLedger::open(dir.path().join("g.db")).unwrap();
        let mut figures: Vec<(Option<String>, NanoUsd, NanoUsd)> = reopened
            .status()
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.spent, s.reserved))
            .collect();
        figures.sort();
        assert_eq!(
            figures,
            vec![
                (Some("tenant_id=a".into()), usd(25), usd(60)),
                (Some("tenant_id=b".into()), usd(0), usd(100)),
            ]
        );
        // A later settle of the first is a replay; the second settles for real.
        assert!(!reopened.settle("res-first-a", usd(25)).unwrap().applied);
        assert!(reopened.settle("res-second-a", usd(60)).unwrap().applied);
    }

    /// Threads reserving and settling at once share transactions, and every one is answered
    /// and counted.
    #[test]
    fn many_threads_share_transactions_and_every_one_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(SqliteLedger::open(dir.path().join("t.db")).unwrap());
        let spec = BudgetSpec::new(
            "all",
            Selector::default(),
            usd(1_000_000),
            Window::Total,
            Mode::Block,
        )
        .unwrap();
        ledger.upsert_budget(&spec).unwrap();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let ledger = Arc::clone(&ledger);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let id = format!("res-{t}-{i:04}");
                        let r = ledger
                            .reserve(&ReserveRequest {
                                call: &call("x"),
                                amount: usd(10),
                                policy: Policy::Block,
                                ttl_ms: None,
                                id: Some(&id),
                            })
                            .unwrap();
                        assert!(!r.replayed);
                        if i % 2 == 0 {
                            ledger.settle(&id, usd(3)).unwrap();
                        } else {
                            ledger.release(&id).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let status = ledger.status().unwrap();
        assert_eq!(
            (status[0].spent, status[0].reserved),
            (usd(16 * 100 * 3), usd(0))
        );
        let largest = ledger
            .group
            .largest
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            largest > 1,
            "16 threads never shared a transaction (largest group {largest})"
        );
    }
}
