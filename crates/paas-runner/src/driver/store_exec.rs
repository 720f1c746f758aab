//! The driver's side of the store seam ([`paas_store::JobStore`]): job
//! writes are submitted in the order the core emits them and the loop never
//! waits for one. A job's commands after a write that is not yet durable
//! are held back, in order, until it is (at once with SQLite; one round trip
//! later with PostgreSQL); other jobs go on meanwhile. Durable before
//! effective holds per job, which is what the core's commands rely on.

use std::collections::{HashMap, VecDeque};

use paas_core::{Command, JobKey, Notice};
use paas_store::{JobStore, Pending, StoreError, StoreWrite};
use tokio::sync::oneshot;

/// A job as the store knows it: runner key and job id.
type StoredKey = (String, u64);
/// Resolves when a write is durable.
type Durable = oneshot::Receiver<Result<(), StoreError>>;

/// The store and the writes in flight.
pub struct StoreExec {
    store: Box<dyn JobStore>,
    /// Jobs with a write not yet durable, and their commands held back.
    held: HashMap<StoredKey, VecDeque<Command>>,
    /// Writes in flight, in submission order (they complete in that order).
    in_flight: VecDeque<(Option<StoredKey>, Durable)>,
}

impl StoreExec {
    pub fn new(store: Box<dyn JobStore>) -> StoreExec {
        StoreExec {
            store,
            held: HashMap::new(),
            in_flight: VecDeque::new(),
        }
    }

    pub fn store(&mut self) -> &mut dyn JobStore {
        self.store.as_mut()
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// No write in flight, no command held.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.held.is_empty()
    }

    /// `command` back if it may run now; else it is queued behind its job's
    /// write in flight.
    fn hold_or_pass(&mut self, key: Option<StoredKey>, command: Command) -> Option<Command> {
        match key.and_then(|key| self.held.get_mut(&key)) {
            Some(queue) => {
                queue.push_back(command);
                None
            }
            None => Some(command),
        }
    }

    /// Submits a write; an error when it failed at once.
    fn submit(&mut self, key: Option<StoredKey>, write: StoreWrite) -> Result<(), StoreError> {
        match self.store.submit(write) {
            Pending::Done(result) => result,
            Pending::Later(done) => {
                if let Some(key) = &key {
                    self.held.entry(key.clone()).or_default();
                }
                self.in_flight.push_back((key, done));
                Ok(())
            }
        }
    }

    /// The next write to become durable (or fail), with the commands its
    /// job held back meanwhile. Pending forever when none is in flight.
    pub async fn next_durable(&mut self) -> Result<Vec<Command>, StoreError> {
        let Some((_, done)) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let result = done.await.unwrap_or_else(|_| {
            Err(StoreError::Postgres {
                location: self.store.location(),
                detail: "the store's writer stopped".to_owned(),
            })
        });
        let (key, _) = self.in_flight.pop_front().expect("front exists");
        result?;
        let Some(key) = key else {
            return Ok(Vec::new());
        };
        // Later writes of the same job are still in flight: they release
        // what follows them.
        if self
            .in_flight
            .iter()
            .any(|(other, _)| other.as_ref() == Some(&key))
        {
            return Ok(Vec::new());
        }
        Ok(self.held.remove(&key).map(Vec::from).unwrap_or_default())
    }

    pub fn tick(&mut self) -> Result<(), StoreError> {
        self.store.tick()
    }
}

impl super::Driver {
    /// The store's name of the job a command concerns, if any.
    fn stored_key(&self, command: &Command) -> Option<StoredKey> {
        let job = match command {
            Command::Save(record) => return Some((record.runner_key.clone(), record.job_id)),
            Command::Forget(job)
            | Command::ConfirmJob { job, .. }
            | Command::CreateApp { job, .. }
            | Command::CheckReady { job, .. }
            | Command::WatchJob { job, .. }
            | Command::Deploy { job, .. }
            | Command::CheckLaunch { job, .. }
            | Command::AppendNotice { job, .. }
            | Command::CheckStatus { job, .. }
            | Command::AppendLog { job, .. }
            | Command::ReportFailure { job, .. }
            | Command::DeleteApp { job, .. } => *job,
            Command::Notice(notice) => notice_job(notice)?,
            Command::RequestJob { .. }
            | Command::RefreshFlavors { .. }
            | Command::ListApps { .. }
            | Command::DeleteOrphan { .. }
            | Command::ListMachines { .. } => return None,
        };
        Some((self.runners[job.runner].key.clone(), job.job_id))
    }

    /// Executes `command` now, or holds it behind its job's write.
    pub(super) fn execute_in_order(&mut self, command: Command) {
        let key = self.stored_key(&command);
        if let Some(command) = self.store.hold_or_pass(key, command) {
            self.execute(command);
        }
    }

    /// Runs the commands a durable write released, in order.
    pub(super) fn released(&mut self, commands: Vec<Command>) {
        for command in commands {
            if self.store_error.is_some() {
                return;
            }
            self.execute_in_order(command);
        }
    }

    /// `Command::Save` / `Command::Forget`, and the foreign applications'
    /// meta data.
    pub(super) fn write(&mut self, job: Option<JobKey>, write: StoreWrite) {
        let key = match (&write, job) {
            (StoreWrite::Save(record), _) => Some((record.runner_key.clone(), record.job_id)),
            (_, Some(job)) => Some((self.runners[job.runner].key.clone(), job.job_id)),
            _ => None,
        };
        let what = match &write {
            StoreWrite::Save(_) => "could not record job state",
            StoreWrite::Forget { .. } => "could not drop job record",
            StoreWrite::Meta { .. } => "could not record meta data",
        };
        let job_id = key.as_ref().map(|(_, id)| *id);
        if let Err(error) = self.store.submit(key, write) {
            tracing::error!(%error, job_id, "{what}");
            self.store_error.get_or_insert_with(|| error.to_string());
        }
    }
}

fn notice_job(notice: &Notice) -> Option<JobKey> {
    match notice {
        Notice::Acquired { job, .. }
        | Notice::Launched { job, .. }
        | Notice::Finished { job, .. }
        | Notice::Failed { job, .. }
        | Notice::Retrying { job, .. }
        | Notice::Decommissioned { job, .. }
        | Notice::GaveUp { job, .. }
        | Notice::Withdrawn { job, .. }
        | Notice::Adopted { job, .. }
        | Notice::MachineVanished { job, .. } => Some(*job),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use paas_core::{JobRecord, RunnerIdx};
    use paas_store::StoreFuture;

    type Completions = Arc<Mutex<VecDeque<oneshot::Sender<Result<(), StoreError>>>>>;

    /// A store whose writes complete when the test says so.
    #[derive(Default)]
    struct Manual {
        completions: Completions,
    }

    impl JobStore for Manual {
        fn location(&self) -> String {
            "manual".into()
        }
        fn load(&mut self) -> StoreFuture<'_, Vec<JobRecord>> {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }
        fn get_meta<'a>(&'a mut self, _: &'a str) -> StoreFuture<'a, Option<String>> {
            Box::pin(std::future::ready(Ok(None)))
        }
        fn set_meta<'a>(&'a mut self, _: &'a str, _: &'a str) -> StoreFuture<'a, ()> {
            Box::pin(std::future::ready(Ok(())))
        }
        fn submit(&mut self, _: StoreWrite) -> Pending {
            let (tx, rx) = oneshot::channel();
            self.completions.lock().unwrap().push_back(tx);
            Pending::Later(rx)
        }
    }

    fn manual() -> (StoreExec, Completions) {
        let store = Manual::default();
        let completions = store.completions.clone();
        (StoreExec::new(Box::new(store)), completions)
    }

    fn forget(job_id: u64) -> StoreWrite {
        StoreWrite::Forget {
            runner_key: "k".into(),
            job_id,
        }
    }

    fn request(runner: RunnerIdx) -> Command {
        Command::RequestJob { runner }
    }

    #[tokio::test]
    async fn a_jobs_commands_wait_for_its_write_and_other_jobs_do_not() {
        let (mut exec, completions) = manual();
        let job_1 = Some(("k".to_owned(), 1));
        let job_2 = Some(("k".to_owned(), 2));
        exec.submit(job_1.clone(), forget(1)).unwrap();
        // Job 1's next command is held; job 2's and runner-wide ones pass.
        assert!(exec.hold_or_pass(job_1.clone(), request(7)).is_none());
        assert!(exec.hold_or_pass(job_2.clone(), request(8)).is_some());
        assert!(exec.hold_or_pass(None, request(9)).is_some());
        exec.submit(job_2.clone(), forget(2)).unwrap();
        assert!(exec.hold_or_pass(job_2.clone(), request(10)).is_none());
        assert!(!exec.is_idle());
        let (first, second) = {
            let mut completions = completions.lock().unwrap();
            (
                completions.pop_front().unwrap(),
                completions.pop_front().unwrap(),
            )
        };
        // Job 2's write done first: nothing is released before job 1's
        // (writes complete in order).
        second.send(Ok(())).unwrap();
        let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel();
        let waiting = tokio::spawn(async move {
            for _ in 0..2 {
                let released = exec.next_durable().await.unwrap();
                probe_tx.send(released).unwrap();
            }
            exec
        });
        tokio::task::yield_now().await;
        assert!(
            probe_rx.try_recv().is_err(),
            "released before job 1's write"
        );
        first.send(Ok(())).unwrap();
        for runner in [7, 10] {
            let released = probe_rx.recv().await.unwrap();
            assert!(
                matches!(released[..], [Command::RequestJob { runner: r }] if r == runner),
                "{released:?}"
            );
        }
        let exec = waiting.await.unwrap();
        assert!(exec.is_idle());
    }

    #[tokio::test]
    async fn a_failed_write_releases_nothing() {
        let (mut exec, completions) = manual();
        let job = Some(("k".to_owned(), 1));
        exec.submit(job.clone(), forget(1)).unwrap();
        assert!(exec.hold_or_pass(job, request(1)).is_none());
        let tx = completions.lock().unwrap().pop_front().unwrap();
        tx.send(Err(StoreError::Timeout {
            location: "manual".into(),
            seconds: 1,
        }))
        .unwrap();
        assert!(exec.next_durable().await.is_err());
    }
}
